/**
 * A protocol-level test client: raw frames in, decoded frames out, close
 * codes observable. Tests of the SDK use src/client instead.
 */
import WebSocket from 'ws';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import type { ErrorFrame, RequestId, ResultFrame, ServerFrame, WelcomeFrame } from '../../src/transport/protocol.js';

export class RawClient {
  readonly replies = new Map<RequestId, (ResultFrame | ErrorFrame)[]>();
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: { id: RequestId; resolve: (f: ResultFrame | ErrorFrame) => void }[] = [];

  private constructor(readonly ws: WebSocket, readonly welcome: WelcomeFrame) {
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    ws.on('message', (data: Buffer) => {
      const f = decodeUntrusted(data) as ServerFrame;
      if (f.t === 'welcome') return;
      const id = f.id as RequestId;
      const list = this.replies.get(id) ?? [];
      list.push(f);
      this.replies.set(id, list);
      this.waiters = this.waiters.filter((w) => (w.id === id ? (w.resolve(f), false) : true));
    });
  }

  static connect(url: string, options: WebSocket.ClientOptions = {}): Promise<RawClient> {
    const ws = new WebSocket(url, options);
    return new Promise((resolve, reject) => {
      ws.once('error', reject);
      ws.once('message', (data: Buffer) => {
        const f = decodeUntrusted(data) as ServerFrame;
        if (f.t !== 'welcome') return reject(new Error(`first frame was ${f.t}`));
        resolve(new RawClient(ws, f));
      });
    });
  }

  send(frame: unknown): void {
    this.ws.send(encode(frame));
  }

  sendBytes(bytes: Uint8Array): void {
    this.ws.send(bytes);
  }

  /** Resolves with the first reply for `id` (already received or to come). */
  reply(id: RequestId, timeoutMs = 20_000): Promise<ResultFrame | ErrorFrame> {
    const have = this.replies.get(id);
    if (have?.length) return Promise.resolve(have[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply for ${String(id)} within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({ id, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }

  request(frame: { id: RequestId } & Record<string, unknown>): Promise<ResultFrame | ErrorFrame> {
    const p = this.reply(frame.id);
    this.send({ t: 'infer', ...frame });
    return p;
  }

  close(): void {
    this.ws.close();
  }
}

export const f32 = (values: ArrayLike<number>) => {
  const a = Float32Array.from(values);
  return new Uint8Array(a.buffer);
};

/** Reads a float32 wire tensor into an aligned Float32Array. */
export const readF32 = (data: Uint8Array) =>
  new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));

export const irisInput = (row: readonly number[]) => ({ input: { dtype: 'float32', shape: [1, 4], data: f32(row) } });

/**
 * The header of a client frame written by hand, so a test can send its
 * payload in parts or stop halfway: binary, final, 64-bit length, masked
 * with a zero key (the payload goes as it is).
 */
export function frameHead(payloadBytes: number): Buffer {
  const h = Buffer.alloc(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(payloadBytes), 2);
  return h; // bytes 10..13: the zero mask key
}
