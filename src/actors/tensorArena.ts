/**
 * Reused memory for the request tensors a node's batchers hold.
 *
 * A request's tensor arrives as a view into its WebSocket frame (or peer
 * frame, or HTTP body): a fresh ArrayBuffer the size of the frame. While the
 * request waits in a batcher queue (up to the queue-delay bound, 250 ms by
 * default) that buffer lives through two scavenges and V8 promotes it, and
 * old-generation ArrayBuffer bytes are what start V8's full collections. Under
 * 3× text-orientation overload a node admitted ~110 MB/s of such buffers and
 * ran a mark-compact every ~300 ms; each paused its event loop 2–7 ms on top
 * of the incremental marking before it, and the requests that arrived
 * meanwhile (refusals included) waited. Copied into chunks of a few long-lived
 * slabs, the tensors keep no frame alive: the frames die young, and the
 * slabs, allocated once, add nothing for the collector to chase. Measured on
 * one node at 2,450 req/s (steady state, three A/B pairs, `/tmp` scripts):
 * 14–16 → 3–4 full collections in 5 s; p99 time to `overloaded` 10.6/12.7/16.3
 * → 8.9/9.7/11.1 ms.
 *
 * Ownership is the batcher's: it copies a request's tensors in once it has
 * queued the request, and gives them back when it answers the request (a
 * result, or any error) or hands it to the router (copying them out first,
 * since the request lives on). A worker reads a batch's tensors when it is
 * handed the batch, before any of them can be given back. Tensors under
 * {@link MIN_TENSOR_BYTES} (a frame that small comes from Node's shared
 * buffer pool) or over {@link MAX_CHUNK_BYTES}, and any once the arena holds
 * its maximum, stay where they are: the arena is an optimisation, never a
 * limit (the memory budget is the limit).
 */
import type { WireTensor } from '../transport/protocol.js';

/** Tensors smaller than this are left in their frames. */
export const MIN_TENSOR_BYTES = 16 * 1024;
/** Tensors larger than this are left in their frames: a chunk class per size up to 8 MiB (the default frame limit). */
export const MAX_CHUNK_BYTES = 8 * 1024 * 1024;
/** Slabs are allocated this large (or one chunk, if larger), as the classes need them. */
const SLAB_BYTES = 4 * 1024 * 1024;

/** What the arena lends a request: its chunks, in no particular order. */
export interface ArenaHolder {
  inputs: Record<string, WireTensor>;
  held?: Uint8Array[] | undefined;
}

export class TensorArena {
  /** Free chunks per size class (a power of two), each a view of its whole chunk. */
  private readonly free = new Map<number, Uint8Array[]>();
  /** Chunks lent out: a chunk given back twice, or one never lent, is not taken back. */
  private readonly lent = new Set<Uint8Array>();
  private slabs = 0;
  private lentBytes = 0;

  /** @param maxBytes slabs allocated at most; past it, tensors stay in their frames. */
  constructor(readonly maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`arena size must be a non-negative integer, got ${maxBytes}`);
  }

  /** Bytes of slabs allocated (never returned to the system: the arena is sized by use, up to its maximum). */
  get bytes(): number {
    return this.slabs;
  }

  /** Bytes of chunks lent to requests now. */
  get lentOut(): number {
    return this.lentBytes;
  }

  /**
   * Copies the holder's tensors into chunks and points its inputs at them;
   * tensors the arena does not take stay as they are. A holder that holds
   * chunks already is left alone.
   */
  hold(h: ArenaHolder): void {
    if (h.held !== undefined) return;
    let inputs: Record<string, WireTensor> | undefined;
    const held: Uint8Array[] = [];
    for (const [name, t] of Object.entries(h.inputs)) {
      const chunk = this.take(t.data.byteLength);
      if (chunk === undefined) continue;
      const data = chunk.subarray(0, t.data.byteLength);
      data.set(t.data);
      (inputs ??= { ...h.inputs })[name] = { ...t, data };
      held.push(chunk);
    }
    if (inputs === undefined) return;
    h.inputs = inputs;
    h.held = held;
  }

  /**
   * Gives the holder's chunks back. With `keep`, its tensors are first copied
   * to memory of their own, for a request that lives on after the batcher
   * lets it go.
   */
  release(h: ArenaHolder, keep = false): void {
    const held = h.held;
    if (held === undefined) return;
    h.held = undefined;
    if (keep) {
      // Only tensors in the arena's slabs move; the others are still views of the request's own frame.
      const slabs = new Set(held.map((chunk) => chunk.buffer));
      const inputs: Record<string, WireTensor> = {};
      for (const [name, t] of Object.entries(h.inputs)) inputs[name] = slabs.has(t.data.buffer) ? { ...t, data: t.data.slice() } : t;
      h.inputs = inputs;
    }
    for (const chunk of held) this.give(chunk);
  }

  private take(bytes: number): Uint8Array | undefined {
    if (bytes < MIN_TENSOR_BYTES || bytes > MAX_CHUNK_BYTES) return undefined;
    const size = 2 ** Math.ceil(Math.log2(bytes));
    let free = this.free.get(size);
    if (free === undefined) this.free.set(size, (free = []));
    let chunk = free.pop();
    if (chunk === undefined) {
      const slabBytes = Math.max(size, SLAB_BYTES);
      if (this.slabs + slabBytes > this.maxBytes) return undefined;
      const slab = new Uint8Array(slabBytes);
      this.slabs += slabBytes;
      for (let at = slabBytes - size; at > 0; at -= size) free.push(slab.subarray(at, at + size));
      chunk = slab.subarray(0, size);
    }
    this.lent.add(chunk);
    this.lentBytes += size;
    return chunk;
  }

  private give(chunk: Uint8Array): void {
    // A chunk on a free list twice would be lent to two requests at once, mixing their tensors.
    if (!this.lent.delete(chunk)) return;
    this.lentBytes -= chunk.byteLength;
    this.free.get(chunk.byteLength)!.push(chunk);
  }
}
