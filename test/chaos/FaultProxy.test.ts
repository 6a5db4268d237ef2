/**
 * FaultProxy against real sockets on loopback, with an echo server as the
 * target: every byte the client sends crosses the proxy twice (toTarget, then
 * toClient), so one round trip exercises both directions.
 */
import { randomBytes } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FaultProxy, formatFaultMode, parseFaultMode } from '../../src/chaos/FaultProxy.js';

let echo: Server;
let echoPort: number;
const echoSockets = new Set<Socket>();
const proxies: FaultProxy[] = [];
const clients: Probe[] = [];

beforeEach(async () => {
  echo = createServer((s) => {
    echoSockets.add(s);
    s.on('error', () => {});
    s.on('close', () => echoSockets.delete(s));
    s.pipe(s);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as AddressInfo).port;
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.socket.destroy();
  await Promise.all(proxies.splice(0).map((p) => p.close()));
  for (const s of echoSockets) s.destroy();
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

async function startProxy(options: Partial<ConstructorParameters<typeof FaultProxy>[0]> = {}): Promise<FaultProxy> {
  const proxy = new FaultProxy({ targetHost: '127.0.0.1', targetPort: echoPort, ...options });
  proxies.push(proxy);
  await proxy.start();
  return proxy;
}

/** A client socket that records what happens to it. */
class Probe {
  readonly socket: Socket;
  readonly chunks: Buffer[] = [];
  bytes = 0;
  error: (Error & { code?: string }) | null = null;
  closed = false;
  connected = false;
  private waiters: (() => void)[] = [];

  constructor(port: number) {
    this.socket = connect({ port, host: '127.0.0.1' });
    this.socket.setNoDelay(true);
    this.socket.on('connect', () => {
      this.connected = true;
      this.wake();
    });
    this.socket.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.bytes += b.length;
      this.wake();
    });
    this.socket.on('error', (e) => {
      this.error = e;
      this.wake();
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    clients.push(this);
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  /** Resolves when `pred` holds; rejects after `ms`. */
  until(pred: () => boolean, ms = 5_000, what = 'condition'): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      const check = (): void => {
        if (pred()) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  bytesAtLeast(n: number, ms?: number): Promise<void> {
    return this.until(() => this.bytes >= n, ms, `${n} bytes (have ${this.bytes})`);
  }

  connectedOrFailed(): Promise<void> {
    return this.until(() => this.connected || this.closed, 5_000, 'connect');
  }

  failed(ms = 1_000): Promise<void> {
    return this.until(() => this.closed || this.error !== null, ms, 'an error or close');
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function eventually(pred: () => boolean, ms = 2_000): Promise<void> {
  const end = performance.now() + ms;
  while (!pred()) {
    if (performance.now() > end) throw new Error('condition not reached');
    await sleep(10);
  }
}

describe('FaultProxy', () => {
  it('forwards large random payloads both ways intact in pass mode and counts the bytes', async () => {
    const proxy = await startProxy();
    expect(proxy.port).toBeGreaterThan(0);
    const payload = randomBytes(4 * 1024 * 1024);
    const c = new Probe(proxy.port);
    c.socket.write(payload);
    await c.bytesAtLeast(payload.length);
    expect(c.received().equals(payload)).toBe(true);
    const s = proxy.stats();
    expect(s.toTarget.bytesForwarded).toBe(payload.length);
    expect(s.toClient.bytesForwarded).toBe(payload.length);
    expect(s.toTarget.bytesDropped + s.toClient.bytesDropped).toBe(0);
    expect(s.connectionsAccepted).toBe(1);
    expect(s.connectionsOpen).toBe(1);
  });

  it('passes a half-close through after the queued data, and forgets the connection once both sides closed', async () => {
    const proxy = await startProxy({ mode: { kind: 'delay', ms: 20 } });
    const c = new Probe(proxy.port);
    let ended = false;
    c.socket.on('end', () => (ended = true));
    c.socket.end('last words');
    await c.until(() => ended && c.closed, 2_000, 'end and close');
    expect(c.error).toBeNull();
    expect(c.received().toString()).toBe('last words');
    await eventually(() => proxy.connections === 0);
    expect(proxy.stats().connectionsReset).toBe(0);
  });

  it('adds at least the delay each way to a round trip and keeps the order of chunks under jitter', async () => {
    const proxy = await startProxy({ mode: { kind: 'delay', ms: 60, jitterMs: 40 } });
    const c = new Probe(proxy.port);
    await c.connectedOrFailed();
    const t0 = performance.now();
    c.socket.write('ping');
    await c.bytesAtLeast(4);
    // Each direction waits at least ms - jitter.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(2 * (60 - 40) - 1);

    // With jitter wider than the spacing, only the per-direction queue keeps order.
    proxy.setMode({ kind: 'delay', ms: 30, jitterMs: 25 });
    const parts: Buffer[] = [];
    for (let i = 0; i < 60; i++) {
      const part = Buffer.from(`<${i}:${randomBytes(8).toString('hex')}>`);
      parts.push(part);
      c.socket.write(part);
      if (i % 10 === 0) await sleep(3);
    }
    const expected = Buffer.concat([Buffer.from('ping'), ...parts]);
    await c.bytesAtLeast(expected.length);
    expect(c.received().equals(expected)).toBe(true);

    // Without jitter, a round trip takes at least 2 × ms.
    proxy.setMode({ kind: 'delay', ms: 50 });
    const t1 = performance.now();
    c.socket.write('x');
    await c.bytesAtLeast(expected.length + 1);
    expect(performance.now() - t1).toBeGreaterThanOrEqual(2 * 50 - 1);
  });

  it('limits throughput to about the configured rate in bandwidth mode', async () => {
    const rate = 200_000;
    const proxy = await startProxy({ mode: { kind: 'bandwidth', bytesPerSec: rate } });
    const payload = randomBytes(100_000);
    const c = new Probe(proxy.port);
    await c.connectedOrFailed();
    const t0 = performance.now();
    c.socket.write(payload);
    await c.bytesAtLeast(payload.length);
    const elapsed = performance.now() - t0;
    expect(c.received().equals(payload)).toBe(true);
    // One burst (50 ms worth) may go at once; the rest at the rate. Lower bound only.
    const burst = rate / 20;
    expect(elapsed).toBeGreaterThanOrEqual(((payload.length - burst) / rate) * 1000 - 5);
  });

  it('forwards nothing in blackhole mode, drops the bytes both ways, and the client sees no error', async () => {
    const proxy = await startProxy();
    const before = new Probe(proxy.port);
    before.socket.write('hello');
    await before.bytesAtLeast(5);
    const echoConnections = echoSockets.size;

    expect(proxy.setMode('blackhole')).toEqual({ kind: 'pass' });
    const fresh = new Probe(proxy.port);
    await fresh.connectedOrFailed();
    expect(fresh.connected).toBe(true); // accepted, then it hangs
    before.socket.write('lost-1');
    fresh.socket.write('lost-22');
    await sleep(250);
    for (const c of [before, fresh]) {
      expect(c.error).toBeNull();
      expect(c.closed).toBe(false);
    }
    expect(before.bytes).toBe(5);
    expect(fresh.bytes).toBe(0);
    // The partitioned connection never reached the target.
    expect(echoSockets.size).toBe(echoConnections);
    const s = proxy.stats();
    expect(s.toTarget.bytesDropped).toBe('lost-1'.length + 'lost-22'.length);
    expect(s.toTarget.bytesForwarded).toBe(5);
    expect(s.connectionsOpen).toBe(2);
  });

  it('after a heal from blackhole resets the connections that lost bytes, keeps idle ones, and new connections work', async () => {
    const proxy = await startProxy();
    const lossy = new Probe(proxy.port);
    const idle = new Probe(proxy.port);
    lossy.socket.write('a');
    idle.socket.write('b');
    await lossy.bytesAtLeast(1);
    await idle.bytesAtLeast(1);

    proxy.setMode('blackhole');
    const acceptedInPartition = new Probe(proxy.port);
    await acceptedInPartition.connectedOrFailed();
    lossy.socket.write('dropped');
    await sleep(50);

    expect(proxy.setMode('pass')).toEqual({ kind: 'blackhole' });
    await lossy.failed(1_000); // models a TCP connection that timed out in the partition
    expect(proxy.stats().connectionsReset).toBe(1);

    idle.socket.write('still-here');
    await idle.bytesAtLeast(1 + 'still-here'.length);
    expect(idle.received().toString()).toBe('bstill-here');
    // Accepted during the partition, nothing lost: it reaches the target now.
    acceptedInPartition.socket.write('late');
    await acceptedInPartition.bytesAtLeast(4);
    expect(acceptedInPartition.received().toString()).toBe('late');

    const next = new Probe(proxy.port);
    const payload = randomBytes(256 * 1024);
    next.socket.write(payload);
    await next.bytesAtLeast(payload.length);
    expect(next.received().equals(payload)).toBe(true);
  });

  it('resets existing connections at once in reset mode and new connections fail fast', async () => {
    const proxy = await startProxy();
    const c = new Probe(proxy.port);
    c.socket.write('hi');
    await c.bytesAtLeast(2);
    await eventually(() => echoSockets.size === 1);

    const t0 = performance.now();
    proxy.setMode('reset');
    await c.failed(500);
    expect(performance.now() - t0).toBeLessThan(500);
    expect(c.error?.code).toBe('ECONNRESET');
    // The target side was reset too.
    await eventually(() => echoSockets.size === 0, 1_000);

    const t1 = performance.now();
    const fresh = new Probe(proxy.port);
    await fresh.failed(500);
    expect(performance.now() - t1).toBeLessThan(500);
    expect(fresh.bytes).toBe(0);
    const s = proxy.stats();
    expect(s.connectionsReset).toBe(1);
    expect(s.connectionsRefused).toBe(1);
    expect(s.connectionsOpen).toBe(0);

    proxy.setMode('pass');
    const after = new Probe(proxy.port);
    after.socket.write('back');
    await after.bytesAtLeast(4);
  });

  it('delivers intact data written in slices of at most maxChunk bytes, one per event-loop turn', async () => {
    const proxy = await startProxy({ mode: { kind: 'slice', maxChunk: 7 } });
    const payload = randomBytes(10_000);
    const c = new Probe(proxy.port);
    c.socket.write(payload);
    await c.bytesAtLeast(payload.length);
    expect(c.received().equals(payload)).toBe(true);
    const s = proxy.stats();
    expect(s.toTarget.writes).toBeGreaterThanOrEqual(Math.ceil(payload.length / 7));
    expect(s.toClient.writes).toBeGreaterThanOrEqual(Math.ceil(payload.length / 7));
    // One slice per turn: the client (same process) reads them nearly all apart.
    expect(c.chunks.length).toBeGreaterThan(payload.length / 7 / 2);
  });

  it('resets a connection whose queue passes maxQueuedBytes instead of buffering without bound', async () => {
    const proxy = await startProxy({ mode: { kind: 'delay', ms: 2_000 }, maxQueuedBytes: 64 * 1024, highWaterBytes: 1024 * 1024 });
    const c = new Probe(proxy.port);
    c.socket.write(randomBytes(512 * 1024));
    await c.failed(1_000);
    expect(proxy.stats().connectionsReset).toBe(1);
    expect(proxy.connections).toBe(0);
  });

  it('backpressures a fast sender on a slow link instead of growing the queue', async () => {
    const proxy = await startProxy({ mode: { kind: 'bandwidth', bytesPerSec: 100_000 }, highWaterBytes: 64 * 1024 });
    const c = new Probe(proxy.port);
    await c.connectedOrFailed();
    for (let i = 0; i < 16; i++) c.socket.write(randomBytes(64 * 1024));
    await sleep(200);
    const s = proxy.stats();
    // High water plus at most one read chunk beyond it.
    expect(s.toTarget.bytesQueued).toBeLessThanOrEqual(64 * 1024 + 64 * 1024);
    expect(c.error).toBeNull();
  });

  it('closes the server and every connection on close(), leaving no timers or sockets behind', async () => {
    const baseline = countResources();
    const proxy = await startProxy({ mode: { kind: 'delay', ms: 5_000 } });
    const a = new Probe(proxy.port);
    const b = new Probe(proxy.port);
    await a.connectedOrFailed();
    await b.connectedOrFailed();
    a.socket.write('queued behind a 5 s timer');
    await eventually(() => proxy.stats().toTarget.bytesQueued > 0 && proxy.connections === 2);

    const t0 = performance.now();
    await proxy.close();
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(proxy.listening).toBe(false);
    expect(proxy.connections).toBe(0);
    await a.failed(1_000);
    await b.failed(1_000);
    await eventually(() => echoSockets.size === 0);
    await eventually(() => {
      const now = countResources();
      return now.timers <= baseline.timers && now.tcp <= baseline.tcp;
    });
    await expect(proxy.close()).resolves.toBeUndefined(); // idempotent
  });

  it('parses and formats mode specs and rejects bad ones', () => {
    expect(parseFaultMode('delay:50:10')).toEqual({ kind: 'delay', ms: 50, jitterMs: 10 });
    expect(parseFaultMode('delay:50')).toEqual({ kind: 'delay', ms: 50, jitterMs: 0 });
    expect(parseFaultMode('bandwidth:1000')).toEqual({ kind: 'bandwidth', bytesPerSec: 1000, burstBytes: 50 });
    expect(parseFaultMode('slice:3')).toEqual({ kind: 'slice', maxChunk: 3 });
    for (const m of ['pass', 'blackhole', 'reset', 'delay:5:1', 'bandwidth:10', 'slice:2']) expect(formatFaultMode(parseFaultMode(m))).toBe(m);
    for (const bad of ['', 'drop', 'delay', 'delay:-1', 'delay:x', 'slice:0', 'slice:1.5', 'bandwidth:0', 'pass:1']) {
      expect(() => parseFaultMode(bad), bad).toThrow(RangeError);
    }
  });
});

/** Live timers and TCP handles in this process (TCPSocketWrap, TCPServerWrap, TCPConnectWrap). */
function countResources(): { timers: number; tcp: number } {
  const info = process.getActiveResourcesInfo();
  return { timers: info.filter((r) => r === 'Timeout').length, tcp: info.filter((r) => r.startsWith('TCP')).length };
}
