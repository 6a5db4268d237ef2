import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { connect, type Client, type StreamRequest } from '../../src/client/Client.js';
import { ActorserveError } from '../../src/errors.js';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import type { WelcomeFrame, WireTensor } from '../../src/transport/protocol.js';

type Frame = Record<string, unknown>;
type Handler = (frame: Frame, reply: (f: unknown) => void) => void;

interface Fake {
  url: string;
  wss: WebSocketServer;
  /** Every frame the fake received, decoded, in arrival order. */
  received: Frame[];
}

const WELCOME: WelcomeFrame = {
  t: 'welcome',
  protocol: 1,
  node: 'fake',
  models: [
    {
      name: 'echo',
      version: '1',
      inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 4] }],
      outputs: [{ name: 'y', dtype: 'float32', shape: [-1, 4] }],
      maxBatch: 8,
    },
  ],
  limits: { maxInFlight: 1024, maxFrameBytes: 1 << 20 },
};

const servers: WebSocketServer[] = [];
const clients: Client[] = [];

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(
    servers.splice(0).map(
      (wss) =>
        new Promise<void>((resolve) => {
          for (const s of wss.clients) s.terminate();
          wss.close(() => resolve());
        }),
    ),
  );
});

/** A ws server on 127.0.0.1:0 that opens with `welcome` and hands decoded frames to `onFrame`. */
async function startFake(onFrame: Handler, welcome: WelcomeFrame = WELCOME, autoPong = true): Promise<Fake> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/v1/stream', autoPong });
  servers.push(wss);
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const received: Frame[] = [];
  wss.on('connection', (ws: WebSocket) => {
    ws.send(encode(welcome));
    ws.on('message', (data: RawData) => {
      const frame = decodeUntrusted(data as Buffer) as Frame;
      received.push(frame);
      onFrame(frame, (f) => {
        if (ws.readyState === ws.OPEN) ws.send(encode(f));
      });
    });
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}/v1/stream`, wss, received };
}

async function open(fake: Fake): Promise<Client> {
  const c = await connect(fake.url, { timeoutMs: 2_000 });
  clients.push(c);
  return c;
}

function float32Of(t: WireTensor): Float32Array {
  const out = new Float32Array(t.data.byteLength / 4);
  new Uint8Array(out.buffer).set(t.data);
  return out;
}

function wire(data: Float32Array, shape: number[]): WireTensor {
  return { dtype: 'float32', shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Answers an infer frame with y = 2x, same shape. */
function doubled(frame: Frame): Frame {
  const x = (frame['inputs'] as Record<string, WireTensor>)['x']!;
  const y = float32Of(x).map((v) => v * 2);
  return {
    t: 'result',
    id: frame['id'],
    model: frame['model'],
    version: '1',
    outputs: { y: wire(y, x.shape) },
    node: 'fake',
    worker: 'w0',
    batchSize: 1,
    timings: { queueMs: 0.5, inferMs: 1, totalMs: 1.5 },
  };
}

const echo: Handler = (frame, reply) => {
  if (frame['t'] === 'infer') reply(doubled(frame));
};

async function waitFor(cond: () => boolean, timeoutMs = 2_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const infers = (fake: Fake) => fake.received.filter((f) => f['t'] === 'infer');

describe('Client', () => {
  it('connect resolves after the welcome frame and exposes it', async () => {
    const c = await open(await startFake(echo));
    expect(c.welcome.node).toBe('fake');
    expect(c.welcome.models[0]?.name).toBe('echo');
    expect(c.welcome.limits.maxInFlight).toBe(1024);
  });

  it('infer resolves with float32 outputs of the shape the server sent', async () => {
    const fake = await startFake(echo);
    const c = await open(fake);
    const r = await c.infer('echo', { x: { data: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), shape: [2, 4] } });
    expect(r.outputs['y']?.shape).toEqual([2, 4]);
    expect(r.outputs['y']?.data).toBeInstanceOf(Float32Array);
    expect([...r.outputs['y']!.data]).toEqual([2, 4, 6, 8, 10, 12, 14, 16]);
    expect(r).toMatchObject({ model: 'echo', version: '1', node: 'fake', worker: 'w0', batchSize: 1 });
    expect(r.timings).toEqual({ queueMs: 0.5, inferMs: 1, totalMs: 1.5 });

    const sent = infers(fake)[0]!;
    expect(sent['id']).toBe(r.id);
    expect(typeof sent['id']).toBe('number');
    const x = (sent['inputs'] as Record<string, WireTensor>)['x']!;
    expect(x.dtype).toBe('float32');
    expect(x.data).toBeInstanceOf(Uint8Array);
    expect(x.data.byteLength).toBe(32);
  });

  it('sends only the listed optional fields and increasing integer ids', async () => {
    const fake = await startFake(echo);
    const c = await open(fake);
    const x = { data: new Float32Array(4), shape: [1, 4] };
    await c.infer('echo', { x });
    await c.infer('echo', { x }, { version: '1', priority: 'high', deadlineMs: 250, key: 'k' });
    const [a, b] = infers(fake);
    expect(Object.keys(a!).sort()).toEqual(['id', 'inputs', 'model', 't']);
    expect(b).toMatchObject({ version: '1', priority: 'high', deadlineMs: 250, key: 'k' });
    expect(b!['id'] as number).toBeGreaterThan(a!['id'] as number);
  });

  it('outputs whose bytes sit at unaligned offsets still decode to the exact values', async () => {
    const values = new Float32Array([0.1, -2.5, 3e-7, 42]);
    // Names of different lengths shift each output's bytes to a different offset mod 4.
    const names = ['a', 'bb', 'ccc', 'dddd', 'eeeee'];
    const fake = await startFake((frame, reply) =>
      reply({
        ...doubled(frame),
        outputs: Object.fromEntries(names.map((n) => [n, wire(values, [1, 4])])),
      }),
    );
    const c = await open(fake);
    const r = await c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    for (const n of names) expect(r.outputs[n]?.data).toEqual(values);
  });

  it('an error frame rejects with an ActorserveError carrying its code and retryAfterMs', async () => {
    const fake = await startFake((frame, reply) =>
      reply({ t: 'error', id: frame['id'], code: 'overloaded', message: 'queue full', retryAfterMs: 250 }),
    );
    const c = await open(fake);
    const p = c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    await expect(p).rejects.toBeInstanceOf(ActorserveError);
    await expect(p).rejects.toMatchObject({ code: 'overloaded', retryAfterMs: 250, message: 'queue full' });
  });

  it('with retry, an overloaded request is sent again no sooner than retryAfterMs and at most 1.5× it, until it is answered', async () => {
    const arrivals: number[] = [];
    const fake = await startFake((frame, reply) => {
      if (frame['t'] !== 'infer') return;
      arrivals.push(performance.now());
      if (arrivals.length < 3) reply({ t: 'error', id: frame['id'], code: 'overloaded', message: 'queue full', retryAfterMs: 200 });
      else reply(doubled(frame));
    });
    const c = await open(fake);
    const r = await c.infer('echo', { x: { data: new Float32Array([1, 2, 3, 4]), shape: [1, 4] } }, { retry: { attempts: 3 } });
    expect(Array.from(r.outputs['y']!.data)).toEqual([2, 4, 6, 8]);
    const ids = infers(fake).map((f) => f['id'] as number);
    expect(new Set(ids).size).toBe(3); // every try is a request of its own
    expect(r.id).toBe(ids[2]);
    for (let i = 1; i < 3; i++) {
      const gap = arrivals[i]! - arrivals[i - 1]!;
      expect(gap).toBeGreaterThanOrEqual(199); // timers may fire a hair early
      expect(gap).toBeLessThan(200 * 1.5 + 250); // plus a loaded machine's delivery
    }
    expect(c.inFlight).toBe(0);
  });

  it('with retry, gives up with the last overloaded once the tries are spent, the server asks for more than maxDelayMs, or the deadline would pass', async () => {
    const fake = await startFake((frame, reply) => {
      const after = (frame['inputs'] as Record<string, WireTensor>)['x']!.shape[0] === 2 ? 5_000 : 80;
      if (frame['t'] === 'infer') reply({ t: 'error', id: frame['id'], code: 'overloaded', message: `try ${infers(fake).length}`, retryAfterMs: after });
    });
    const c = await open(fake);
    const one = { x: { data: new Float32Array(4), shape: [1, 4] } };
    await expect(c.infer('echo', one, { retry: { attempts: 2 } })).rejects.toMatchObject({ code: 'overloaded', message: 'try 2' });
    expect(infers(fake)).toHaveLength(2);
    // 5 s asked, 1 s allowed: no retry.
    const two = { x: { data: new Float32Array(8), shape: [2, 4] } };
    await expect(c.infer('echo', two, { retry: { attempts: 5, maxDelayMs: 1_000 } })).rejects.toMatchObject({ code: 'overloaded', retryAfterMs: 5_000 });
    expect(infers(fake)).toHaveLength(3);
    // A deadline of 200 ms: the first try carries it; a retry after 80–120 ms carries what is left; a third
    // starts only if its wait fits in what is left then, and no fourth can.
    fake.received.length = 0;
    await expect(c.infer('echo', one, { deadlineMs: 200, retry: { attempts: 10 } })).rejects.toMatchObject({ code: 'overloaded' });
    const deadlines = infers(fake).map((f) => f['deadlineMs'] as number);
    expect(deadlines[0]).toBe(200);
    expect(deadlines.length).toBeGreaterThanOrEqual(2);
    expect(deadlines.length).toBeLessThanOrEqual(3);
    for (let i = 1; i < deadlines.length; i++) expect(deadlines[i]!).toBeLessThanOrEqual(deadlines[i - 1]! - 79);
    expect(() => c.infer('echo', one, { retry: { attempts: 0 } })).toThrow(RangeError);
    expect(() => c.infer('echo', one, { retry: { maxDelayMs: -1 } })).toThrow(RangeError);
  });

  it('with retry, aborting while it waits to retry rejects cancelled at once and sends nothing more', async () => {
    const fake = await startFake((frame, reply) => {
      if (frame['t'] === 'infer') reply({ t: 'error', id: frame['id'], code: 'overloaded', message: 'queue full', retryAfterMs: 5_000 });
    });
    const c = await open(fake);
    const ac = new AbortController();
    const p = c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } }, { signal: ac.signal, retry: {} });
    await waitFor(() => infers(fake).length === 1);
    await new Promise((r) => setTimeout(r, 20)); // the refusal is in; the client waits
    const t0 = performance.now();
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'cancelled', message: 'aborted while waiting to retry' });
    expect(performance.now() - t0).toBeLessThan(1_000);
    expect(infers(fake)).toHaveLength(1);
  });

  it('with retry, an error other than overloaded is not retried', async () => {
    const fake = await startFake((frame, reply) => {
      if (frame['t'] === 'infer') reply({ t: 'error', id: frame['id'], code: 'internal', message: 'boom' });
    });
    const c = await open(fake);
    await expect(c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } }, { retry: { attempts: 5 } })).rejects.toMatchObject({ code: 'internal' });
    expect(infers(fake)).toHaveLength(1);
  });

  it('an input whose shape does not match its data rejects with invalid_request without sending', async () => {
    const fake = await startFake(echo);
    const c = await open(fake);
    const p = c.infer('echo', { x: { data: new Float32Array(3), shape: [1, 4] } });
    await expect(p).rejects.toMatchObject({ code: 'invalid_request' });
    await c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    expect(infers(fake)).toHaveLength(1);
  });

  it('a frame over the server maxFrameBytes rejects with invalid_request and the connection lives on', async () => {
    const fake = await startFake(echo, { ...WELCOME, limits: { maxInFlight: 16, maxFrameBytes: 1024 } });
    const c = await open(fake);
    const big = c.infer('echo', { x: { data: new Float32Array(1024), shape: [256, 4] } });
    await expect(big).rejects.toMatchObject({ code: 'invalid_request' });
    const ok = await c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    expect(ok.outputs['y']?.shape).toEqual([1, 4]);
  });

  it('stream never has more than window requests in flight and yields every request exactly once', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const fake = await startFake((frame, reply) => {
      if (frame['t'] !== 'infer') return;
      inFlight++;
      maxInFlight = Math.max(maxInFlight, inFlight);
      // Random delays answer out of order.
      setTimeout(() => {
        inFlight--;
        reply(doubled(frame));
      }, Math.random() * 4);
    });
    const c = await open(fake);
    const count = 200;
    const window = 8;
    function* requests(): Generator<StreamRequest & { index: number }> {
      for (let i = 0; i < count; i++) {
        yield { index: i, model: 'echo', inputs: { x: { data: new Float32Array([i, 0, 0, 0]), shape: [1, 4] } } };
      }
    }
    const seen: number[] = [];
    for await (const o of c.stream(requests(), { window })) {
      expect(o.ok).toBe(true);
      if (o.ok) expect(o.result.outputs['y']?.data[0]).toBe(o.request.index * 2);
      seen.push(o.request.index);
    }
    expect(maxInFlight).toBeLessThanOrEqual(window);
    expect(maxInFlight).toBe(window);
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, i) => i));
    expect(infers(fake)).toHaveLength(count);
    expect(c.inFlight).toBe(0);
  });

  it('stream with retry tries an overloaded request again, holding its window slot while it waits; leaving early ends the waits', async () => {
    const tries = new Map<number, number>(); // request index -> tries seen
    let waitingOrRunning = 0; // requests the server has seen and not yet answered ok
    let most = 0;
    const fake = await startFake((frame, reply) => {
      if (frame['t'] !== 'infer') return;
      const index = float32Of((frame['inputs'] as Record<string, WireTensor>)['x']!)[0]!;
      const n = (tries.get(index) ?? 0) + 1;
      tries.set(index, n);
      if (n === 1) {
        most = Math.max(most, ++waitingOrRunning);
        reply({ t: 'error', id: frame['id'], code: 'overloaded', message: 'queue full', retryAfterMs: 30 });
      } else {
        waitingOrRunning--;
        reply(doubled(frame));
      }
    });
    const c = await open(fake);
    const requests = (count: number) => Array.from({ length: count }, (_, i) => ({ index: i, model: 'echo', inputs: { x: { data: new Float32Array([i, 0, 0, 0]), shape: [1, 4] } } }));
    const seen: number[] = [];
    for await (const o of c.stream(requests(12), { window: 4, retry: { attempts: 2 } })) {
      expect(o.ok).toBe(true);
      if (o.ok) expect(o.result.outputs['y']?.data[0]).toBe(o.request.index * 2);
      seen.push(o.request.index);
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect([...tries.values()].every((n) => n === 2)).toBe(true);
    expect(most).toBeLessThanOrEqual(4); // a request waiting to retry still holds its slot

    // Request 3 is answered, the others refused for 300 ms: leaving at its outcome ends the others' waits, so no retry follows.
    const slow = await startFake((frame, reply) => {
      if (frame['t'] !== 'infer') return;
      if (float32Of((frame['inputs'] as Record<string, WireTensor>)['x']!)[0] === 3) reply(doubled(frame));
      else reply({ t: 'error', id: frame['id'], code: 'overloaded', message: 'queue full', retryAfterMs: 300 });
    });
    const c2 = await open(slow);
    for await (const o of c2.stream(requests(8), { window: 4, retry: { attempts: 2 } })) {
      expect(o.ok && o.request.index).toBe(3);
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
    const sent = infers(slow).length;
    expect(sent).toBeLessThanOrEqual(5); // the window, and the one launched into request 3's slot before the break
    await new Promise((r) => setTimeout(r, 600)); // past every 300–450 ms wait
    expect(infers(slow)).toHaveLength(sent);
    expect(c2.inFlight).toBe(0);
    expect(() => c2.stream(requests(1), { retry: { attempts: 1.5 } })).toThrow(RangeError);
  });

  it('stream reads an async source and reports failures as outcomes, not exceptions', async () => {
    const fake = await startFake((frame, reply) => {
      if ((frame['id'] as number) % 3 === 0) {
        reply({ t: 'error', id: frame['id'], code: 'deadline_exceeded', message: 'late' });
      } else reply(doubled(frame));
    });
    const c = await open(fake);
    async function* requests(): AsyncGenerator<StreamRequest> {
      for (let i = 0; i < 30; i++) {
        await new Promise((r) => setTimeout(r, 0));
        yield { model: 'echo', inputs: { x: { data: new Float32Array(4), shape: [1, 4] } } };
      }
    }
    let ok = 0;
    const codes: string[] = [];
    for await (const o of c.stream(requests(), { window: 4 })) {
      if (o.ok) ok++;
      else codes.push(o.error.code);
    }
    expect(ok + codes.length).toBe(30);
    expect(codes.length).toBeGreaterThan(0);
    expect(new Set(codes)).toEqual(new Set(['deadline_exceeded']));
  });

  it('stream caps its window at the server maxInFlight', async () => {
    let inFlight = 0;
    let maxInFlight = 0;
    const fake = await startFake(
      (frame, reply) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        setTimeout(() => {
          inFlight--;
          reply(doubled(frame));
        }, 1);
      },
      { ...WELCOME, limits: { maxInFlight: 3, maxFrameBytes: 1 << 20 } },
    );
    const c = await open(fake);
    const reqs = Array.from({ length: 20 }, () => ({
      model: 'echo',
      inputs: { x: { data: new Float32Array(4), shape: [1, 4] } },
    }));
    let n = 0;
    for await (const o of c.stream(reqs, { window: 64 })) n += o.ok ? 1 : 0;
    expect(n).toBe(20);
    expect(maxInFlight).toBe(3);
  });

  it('leaving a stream early cancels the requests still in flight', async () => {
    const fake = await startFake((frame, reply) => {
      // Answer only the first request; the rest stay queued.
      if (frame['t'] === 'infer' && frame['id'] === 1) reply(doubled(frame));
    });
    const c = await open(fake);
    const reqs = Array.from({ length: 10 }, () => ({
      model: 'echo',
      inputs: { x: { data: new Float32Array(4), shape: [1, 4] } },
    }));
    for await (const o of c.stream(reqs, { window: 4 })) {
      expect(o.ok).toBe(true);
      break;
    }
    // The freed slot was refilled (id 5) before the first outcome was yielded.
    await waitFor(() => fake.received.filter((f) => f['t'] === 'cancel').length === 4);
    const cancelled = fake.received.filter((f) => f['t'] === 'cancel').map((f) => f['id']);
    expect(cancelled.sort()).toEqual([2, 3, 4, 5]);
    expect(infers(fake)).toHaveLength(5);
    expect(c.inFlight).toBe(0);
  });

  it('stream rejects a window that is not a positive integer with RangeError', async () => {
    const c = await open(await startFake(echo));
    expect(() => c.stream([], { window: 0 })).toThrow(RangeError);
    expect(() => c.stream([], { window: 1.5 })).toThrow(RangeError);
  });

  it('closing the server rejects every outstanding request with unavailable', async () => {
    const fake = await startFake(() => undefined); // never answers
    const c = await open(fake);
    const x = { x: { data: new Float32Array(4), shape: [1, 4] } };
    const pending = [c.infer('echo', x), c.infer('echo', x), c.infer('echo', x)];
    const settled = Promise.allSettled(pending);
    await waitFor(() => infers(fake).length === 3);
    for (const s of fake.wss.clients) s.terminate();
    for (const r of await settled) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') {
        expect(r.reason).toBeInstanceOf(ActorserveError);
        expect((r.reason as ActorserveError).code).toBe('unavailable');
      }
    }
    expect(c.inFlight).toBe(0);
    await expect(c.infer('echo', x)).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('a node that answers no ping is taken for gone: the connection closes and every request in flight rejects unavailable', async () => {
    const fake = await startFake(() => undefined, WELCOME, false); // never answers, not even a ping
    const c = await connect(fake.url, { timeoutMs: 2_000, pingMs: 100 });
    clients.push(c);
    const x = { x: { data: new Float32Array(4), shape: [1, 4] } };
    const pending = [c.infer('echo', x), c.infer('echo', x)];
    for (const r of await Promise.allSettled(pending)) {
      expect(r.status).toBe('rejected');
      if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'unavailable', message: expect.stringMatching(/answered no ping within 100 ms/) });
    }
    expect(c.inFlight).toBe(0);
    await expect(c.infer('echo', x)).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('a node that answers pings keeps the connection however long it is quiet, and pingMs 0 sends none', async () => {
    const x = { x: { data: Float32Array.of(1, 2, 3, 4), shape: [1, 4] } };
    const answering = await connect((await startFake(echo)).url, { timeoutMs: 2_000, pingMs: 150 });
    const silent = await startFake(echo, WELCOME, false);
    const unpinged = await connect(silent.url, { timeoutMs: 2_000, pingMs: 0 });
    clients.push(answering, unpinged);
    await new Promise((r) => setTimeout(r, 750)); // five intervals
    expect(Array.from((await answering.infer('echo', x)).outputs['y']!.data)).toEqual([2, 4, 6, 8]);
    expect(Array.from((await unpinged.infer('echo', x)).outputs['y']!.data)).toEqual([2, 4, 6, 8]);
    expect(() => connect(silent.url, { pingMs: -1 })).toThrow(RangeError);
  });

  it('client close rejects outstanding requests with unavailable', async () => {
    const c = await open(await startFake(() => undefined));
    const p = c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    const rejected = expect(p).rejects.toMatchObject({ code: 'unavailable' });
    await c.close();
    await rejected;
  });

  it('aborting a request sends a cancel frame with its id and rejects with cancelled', async () => {
    const fake = await startFake((frame, reply) => {
      if (frame['t'] === 'cancel') reply({ t: 'error', id: frame['id'], code: 'cancelled', message: 'cancelled' });
    });
    const c = await open(fake);
    const ac = new AbortController();
    const p = c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } }, { signal: ac.signal });
    await waitFor(() => infers(fake).length === 1);
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'cancelled' });
    await waitFor(() => fake.received.some((f) => f['t'] === 'cancel'));
    const cancel = fake.received.find((f) => f['t'] === 'cancel')!;
    expect(cancel).toEqual({ t: 'cancel', id: infers(fake)[0]!['id'] });
    expect(c.inFlight).toBe(0);
  });

  it('an already aborted signal rejects with cancelled without sending', async () => {
    const fake = await startFake(echo);
    const c = await open(fake);
    const p = c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } }, { signal: AbortSignal.abort() });
    await expect(p).rejects.toMatchObject({ code: 'cancelled' });
    await c.infer('echo', { x: { data: new Float32Array(4), shape: [1, 4] } });
    expect(fake.received).toHaveLength(1);
  });

  it('connect rejects with unauthorized when the upgrade is refused with HTTP 401', async () => {
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      verifyClient: (_info, cb) => cb(false, 401, 'Unauthorized'),
    });
    servers.push(wss);
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    const { port } = wss.address() as { port: number };
    await expect(connect(`ws://127.0.0.1:${port}/v1/stream`, { timeoutMs: 2_000 })).rejects.toMatchObject({
      code: 'unauthorized',
    });
  });

  it('connect with retry comes back after a 503 Retry-After from a node at its connection cap, and without it rejects overloaded', async () => {
    let upgrades = 0;
    const wss = new WebSocketServer({
      host: '127.0.0.1',
      port: 0,
      path: '/v1/stream',
      verifyClient: (_info, done) => (++upgrades === 1 || upgrades === 3 ? done(false, 503, 'Service Unavailable', { 'retry-after': '1' }) : done(true)),
    });
    servers.push(wss);
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    wss.on('connection', (ws: WebSocket) => ws.send(encode(WELCOME)));
    const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/v1/stream`;
    const t0 = performance.now();
    const c = await connect(url, { timeoutMs: 2_000, retry: { attempts: 2 } });
    clients.push(c);
    const waited = performance.now() - t0;
    expect(c.welcome.node).toBe('fake');
    expect(upgrades).toBe(2);
    expect(waited).toBeGreaterThanOrEqual(999);
    expect(waited).toBeLessThan(1_500 + 1_000);
    await expect(connect(url, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: 'overloaded', retryAfterMs: 1000 });
    expect(upgrades).toBe(3);
    expect(() => connect(url, { retry: { attempts: -1 } })).toThrow(RangeError);
  });

  it('connect rejects with unavailable when nothing listens', async () => {
    const fake = await startFake(echo);
    const url = fake.url;
    await new Promise<void>((resolve) => fake.wss.close(() => resolve()));
    await expect(connect(url, { timeoutMs: 2_000 })).rejects.toMatchObject({ code: 'unavailable' });
  });

  it('connect rejects with unavailable when the first frame is not a welcome', async () => {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    servers.push(wss);
    wss.on('connection', (ws) => ws.send(encode({ t: 'result', id: 1 })));
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    const { port } = wss.address() as { port: number };
    await expect(connect(`ws://127.0.0.1:${port}/v1/stream`, { timeoutMs: 2_000 })).rejects.toMatchObject({
      code: 'unavailable',
    });
  });
});
