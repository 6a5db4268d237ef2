/**
 * The generator's prebuilt masked frames, sent through a real `ws` server:
 * each arrives as the payload it was built from with its id patched in,
 * under a non-zero key the server had to unmask, and a frame is not
 * reused before its write has completed.
 */
import type { AddressInfo } from 'node:net';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { maskedFrame, MaskedFramePool } from '../../bench/maskedFrames.js';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';

let server: WebSocketServer;
let url: string;
const received: Buffer[] = [];

beforeAll(async () => {
  server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
  await new Promise((r) => server.once('listening', r));
  url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  server.on('connection', (ws) => ws.on('message', (data: Buffer) => received.push(data)));
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** A payload with a uint32 id slot, as the generator builds it; `pad` bytes make it as large as wanted. */
const payloadOf = (pad: number) => {
  const bytes = encode({ t: 'infer', id: 0xfffffffe, pad: new Uint8Array(pad).fill(7) });
  return { bytes, idPos: bytes.indexOf(Buffer.from([0xce, 0xff, 0xff, 0xff, 0xfe])) + 1 };
};

describe('maskedFrame', () => {
  it('masks under a non-zero key and frames every payload size class (7-bit, 16-bit and 64-bit lengths)', () => {
    for (const n of [10, 125, 126, 65_535, 65_536, 110_592]) {
      const payload = new Uint8Array(n).map((_, i) => i * 31);
      const { bytes, key, at } = maskedFrame(payload);
      expect(key.readUInt32BE(0)).not.toBe(0);
      expect(bytes.length).toBe(at + n);
      expect(bytes[0]).toBe(0x82);
      expect(bytes[1]! & 0x80).toBe(0x80);
      const unmasked = bytes.subarray(at).map((b, i) => b ^ key[i & 3]!);
      expect(Buffer.from(unmasked).equals(Buffer.from(payload))).toBe(true);
    }
  });
});

describe('MaskedFramePool', () => {
  it('delivers every send, in order, as its payload with its own id, through bursts larger than the prebuilt frames', async () => {
    received.length = 0;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    await new Promise((r) => ws.once('open', r));
    const socket = (ws as unknown as { _socket: Socket })._socket;
    const small = payloadOf(20);
    const large = payloadOf(200_000);
    const pools = [new MaskedFramePool(small.bytes, small.idPos), new MaskedFramePool(large.bytes, large.idPos)];
    const ids: number[] = [];
    for (let burst = 0; burst < 5; burst++) {
      // 40 sends at once: more than the 16 frames built up front, so the pools must grow, not reuse a frame still queued.
      for (let i = 0; i < 40; i++) {
        const id = burst * 1000 + i;
        ids.push(id);
        pools[i % 2]!.send(socket, id);
      }
      await new Promise((r) => setImmediate(r));
    }
    await new Promise<void>((resolve, reject) => {
      const until = Date.now() + 10_000;
      const check = () => (received.length >= ids.length ? resolve() : Date.now() > until ? reject(new Error(`${received.length} of ${ids.length} arrived`)) : setTimeout(check, 10));
      check();
    });
    expect(received.map((b) => (decodeUntrusted(b) as { id: number }).id)).toEqual(ids);
    received.forEach((b, k) => {
      const pad = (decodeUntrusted(b) as { pad: Uint8Array }).pad;
      expect(pad.length).toBe(k % 2 === 0 ? 20 : 200_000);
      expect(pad.every((x) => x === 7)).toBe(true);
    });
    expect(pools[1]!.size).toBeGreaterThan(16);
    ws.terminate();
  });
});
