import { describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { addressKey, SOCKET_HEADROOM, startServer } from '../../src/transport/Server.js';

describe('startServer', () => {
  it('closes sockets of any kind past the client cap plus headroom at accept, and leaves the port uncapped without one', async () => {
    const base = { host: '127.0.0.1', port: 0, maxFrameBytes: 1024, onClient: () => undefined, isReady: () => true };
    const capped = await startServer({ ...base, maxClients: 3 });
    const open = await startServer(base);
    try {
      expect(capped.http.maxConnections).toBe(3 + SOCKET_HEADROOM);
      expect(open.http.maxConnections ?? Number.POSITIVE_INFINITY).toBe(Number.POSITIVE_INFINITY);
    } finally {
      await capped.close();
      await open.close();
    }
  });

  it('answers 408 and closes a socket that sends no whole request head in time, silent or trickling (slowloris), within a second of the timeout', async () => {
    const headersTimeoutMs = 400;
    const server = await startServer({ host: '127.0.0.1', port: 0, maxFrameBytes: 1024, onClient: () => undefined, isReady: () => true, headersTimeoutMs });
    /** Connects, sends `lines` one every 100 ms (none: silent), and resolves with what came back and when it closed. */
    const hold = (lines: string[]) =>
      new Promise<{ ms: number; reply: string }>((resolve) => {
        const t0 = performance.now();
        let reply = '';
        const s = connect(server.port, '127.0.0.1');
        const trickle = setInterval(() => {
          const line = lines.shift();
          if (line !== undefined) s.write(line);
        }, 100);
        s.on('data', (d) => (reply += d.toString()));
        s.on('error', () => undefined);
        s.on('close', () => {
          clearInterval(trickle);
          resolve({ ms: performance.now() - t0, reply });
        });
      });
    try {
      const trickled = Array.from({ length: 40 }, (_, i) => (i === 0 ? 'GET /v1/stream HTTP/1.1\r\n' : `x-pad-${i}: 1\r\n`));
      const [silent, trickling] = await Promise.all([hold([]), hold(trickled)]);
      for (const r of [silent, trickling]) {
        expect(r.reply).toMatch(/^HTTP\/1\.1 408/);
        expect(r.ms).toBeGreaterThanOrEqual(headersTimeoutMs * 0.9);
        expect(r.ms).toBeLessThan(headersTimeoutMs + 1_000 + 1_500); // the check's period, then slack for a loaded machine
      }
      // A request that arrives whole is answered as ever.
      const res = await fetch(`http://127.0.0.1:${server.port}/v2/health/live`);
      expect(res.status).toBe(200);
    } finally {
      await server.close();
    }
  });

  it('counts a client for the per-address cap by its IPv4 address, or by the /64 of its IPv6 one', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::FFFF:203.0.113.7')).toBe('203.0.113.7');
    // One host's /64: every address in it is one key, however it is written.
    const host = ['2001:db8:1:2::1', '2001:db8:1:2:ffff:ffff:ffff:fffe', '2001:0db8:0001:0002:0:0:0:9', '2001:db8:1:2::a%eth0'].map(addressKey);
    expect(new Set(host)).toEqual(new Set(['2001:db8:1:2::/64']));
    expect(addressKey('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('64:ff9b::203.0.113.7')).toBe('64:ff9b:0:0::/64');
    expect(addressKey('fe80::1:2:3:4')).toBe('fe80:0:0:0::/64');
    expect(addressKey('1:2:3:4:5::')).toBe('1:2:3:4::/64');
  });
});

