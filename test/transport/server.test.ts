import { describe, expect, it } from 'vitest';
import { SOCKET_HEADROOM, startServer } from '../../src/transport/Server.js';

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
});
