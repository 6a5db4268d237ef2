import { describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { coalescingSender } from '../../src/transport/coalesce.js';

/** A server-side WebSocket on loopback whose socket counts the writes that reach the kernel, and a client reading it. */
async function pair() {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', r));
  const serverSide = new Promise<WebSocket>((r) => wss.once('connection', r));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}`);
  const received: string[] = [];
  client.on('message', (m) => received.push(m.toString()));
  await new Promise((r) => client.once('open', r));
  const ws = await serverSide;
  const socket = (ws as unknown as { _socket: Socket & { _writev: unknown; _write: unknown } })._socket;
  const counted = { syscalls: 0 };
  for (const key of ['_writev', '_write'] as const) {
    const original = socket[key] as (...args: unknown[]) => unknown;
    socket[key] = function (this: unknown, ...args: unknown[]) {
      counted.syscalls++;
      return original.apply(this, args);
    };
  }
  const close = async () => {
    client.terminate();
    await new Promise((r) => wss.close(r));
  };
  return { ws, received, counted, close };
}

describe('coalescingSender', () => {
  it('sends frames written in one callback, and in the microtasks it chains, in one write, in order', async () => {
    const { ws, received, counted, close } = await pair();
    try {
      const send = coalescingSender(ws);
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          send(Buffer.from('a'));
          queueMicrotask(() => {
            send(Buffer.from('b'));
            void Promise.resolve().then(() => send(Buffer.from('c')));
          });
          void (async () => {
            for (let i = 0; i < 5; i++) await null;
            send(Buffer.from('d'));
          })();
          resolve();
        }),
      );
      await expect.poll(() => received.length).toBe(4);
      expect(received).toEqual(['a', 'b', 'c', 'd']);
      expect(counted.syscalls).toBe(1);

      // Frames from separate callbacks go out separately: nothing waits for a later one.
      await new Promise<void>((r) => setImmediate(() => (send(Buffer.from('e')), r())));
      await expect.poll(() => received.length).toBe(5);
      await new Promise<void>((r) => setImmediate(() => (send(Buffer.from('f')), r())));
      await expect.poll(() => received.length).toBe(6);
      expect(received.slice(4)).toEqual(['e', 'f']);
      expect(counted.syscalls).toBe(3);
    } finally {
      await close();
    }
  });
});
