/**
 * Client WebSocket frames built once and reused, for the load generator.
 *
 * A client must mask every frame it sends (RFC 6455 §5.3), and `ws` does so
 * by copying the payload into a fresh buffer under a fresh key: for a
 * text-orientation request that is 110 KB allocated and XORed per send. At
 * three times the node's capacity that cost the generator ~40% of a core
 * (mask copies and the garbage collections they caused, profiled), taken
 * from the same two cores the node under test runs on. Here each frame is
 * masked once, under its own random non-zero key, and only the four id
 * bytes are patched (masked) per send, then the whole frame is written to
 * the socket as it is. The node still unmasks every byte of every frame, as
 * it must for any real client; only the generator's side gets cheaper.
 *
 * A frame handed to the socket may sit in its write queue, so it is not
 * patched again until its write has completed: each template keeps a pool
 * of frames, growing with the writes in flight (bounded by the generator's
 * own cap on unsent bytes).
 */
import { randomFillSync } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

type MaskFn = (source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number) => void;
/** bufferutil's native XOR (an optional dependency, as for ws), or undefined for the byte loop. */
const nativeMask: MaskFn | undefined = (() => {
  try {
    return (createRequire(import.meta.url)('bufferutil') as { mask: MaskFn }).mask;
  } catch {
    return undefined;
  }
})();
/** Frames built per template up front: a burst of sends finds them ready instead of masking 110 KB each in the loop. */
const PREBUILT = 16;

/** A binary frame's header with the mask bit set, for a payload of `length` bytes. */
function header(length: number): Buffer {
  if (length < 126) return Buffer.from([0x82, 0x80 | length]);
  if (length < 65_536) {
    const h = Buffer.alloc(4);
    h[0] = 0x82;
    h[1] = 0x80 | 126;
    h.writeUInt16BE(length, 2);
    return h;
  }
  const h = Buffer.alloc(10);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(length), 2);
  return h;
}

/** A random masking key, never all zero (a zero key would spare the server its unmasking). */
function maskKey(): Buffer {
  const key = Buffer.alloc(4);
  do randomFillSync(key);
  while ((key[0]! | key[1]! | key[2]! | key[3]!) === 0);
  return key;
}

/** One complete masked frame of `payload` under a fresh key; `at` is where the payload starts. */
export function maskedFrame(payload: Uint8Array): { bytes: Buffer; key: Buffer; at: number } {
  const head = header(payload.byteLength);
  const key = maskKey();
  const bytes = Buffer.allocUnsafe(head.length + 4 + payload.byteLength);
  head.copy(bytes, 0);
  key.copy(bytes, head.length);
  const at = head.length + 4;
  if (nativeMask) nativeMask(payload, key, bytes, at, payload.byteLength);
  else for (let i = 0; i < payload.byteLength; i++) bytes[at + i] = payload[i]! ^ key[i & 3]!;
  return { bytes, key, at };
}

/** Frames of one payload whose uint32 id at `idPos` changes per send. */
export class MaskedFramePool {
  private readonly free: { bytes: Buffer; key: Buffer; at: number }[] = [];

  /** Frames built so far: {@link PREBUILT}, or the most writes that were in flight at once. */
  size = 0;

  constructor(
    private readonly payload: Uint8Array,
    private readonly idPos: number,
  ) {
    while (this.size < PREBUILT) this.free.push(this.build());
  }

  /** Writes the frame with `id` to `socket`; the frame goes back to the pool once written. */
  send(socket: Socket, id: number): void {
    const f = this.free.pop() ?? this.build();
    const at = f.at + this.idPos;
    const p = this.idPos;
    f.bytes[at] = ((id >>> 24) & 0xff) ^ f.key[p & 3]!;
    f.bytes[at + 1] = ((id >>> 16) & 0xff) ^ f.key[(p + 1) & 3]!;
    f.bytes[at + 2] = ((id >>> 8) & 0xff) ^ f.key[(p + 2) & 3]!;
    f.bytes[at + 3] = (id & 0xff) ^ f.key[(p + 3) & 3]!;
    socket.write(f.bytes, () => this.free.push(f));
  }

  private build() {
    this.size++;
    return maskedFrame(this.payload);
  }
}
