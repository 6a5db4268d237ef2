/**
 * The buffers a worker stacks its batches' inputs into, used again.
 *
 * A batch's inputs go to the inference thread in buffers of their own (moved,
 * not copied). Allocated fresh for every batch, a buffer over glibc's mmap
 * threshold (128 KiB at first: two text-orientation rows) is fresh pages
 * from the kernel, faulted in and zeroed while the event loop copies the rows
 * into it, and the thread's collector frees it again later. The thread now
 * hands each run's input buffers back with its result, and the next batch of
 * the same byte size is stacked into one of them: copying four
 * text-orientation rows into a fresh buffer cost 62–78 µs against 24 µs into
 * one used before (a /tmp script, 10,000 batches of each size; one row 19–27
 * against 6 µs).
 *
 * A buffer is taken only for a batch of exactly its byte size, so stacking
 * the batch writes every byte of it: nothing of an earlier batch is left for
 * the model to read. The pool keeps the {@link MAX_KEPT} buffers given back
 * last, at most {@link MAX_KEPT_BYTES} in all; smaller buffers than
 * {@link MIN_KEPT_BYTES} come from malloc's bins cheaply and are not kept.
 */

/** Buffers smaller than this are not kept. */
export const MIN_KEPT_BYTES = 16 * 1024;
/** Buffers kept at most: a few batches' worth (the one running, the one staged, an urgent one). */
export const MAX_KEPT = 6;
/** Bytes kept at most. */
export const MAX_KEPT_BYTES = 64 * 1024 * 1024;

export class BatchBuffers {
  /** Kept buffers, the one given back last at the end. */
  private readonly kept: ArrayBuffer[] = [];
  private keptBytes = 0;

  /** Bytes of buffers kept now. */
  get bytes(): number {
    return this.keptBytes;
  }

  /** A buffer of exactly `bytes` bytes, its contents undefined: one given back, else a fresh one. */
  take(bytes: number): ArrayBuffer {
    for (let i = this.kept.length - 1; i >= 0; i--) {
      const b = this.kept[i]!;
      if (b.byteLength !== bytes) continue;
      this.kept.splice(i, 1);
      this.keptBytes -= bytes;
      return b;
    }
    // Not zeroed: whoever takes it writes every byte.
    return Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
  }

  /** Keeps buffers a run no longer needs; drops the oldest kept ones past the limits. */
  give(buffers: Iterable<ArrayBuffer>): void {
    for (const b of buffers) {
      // A buffer moved away since (detached) reads 0 bytes; one kept already must not be lent twice.
      if (b.byteLength < MIN_KEPT_BYTES || b.byteLength > MAX_KEPT_BYTES || this.kept.includes(b)) continue;
      this.kept.push(b);
      this.keptBytes += b.byteLength;
      while (this.kept.length > MAX_KEPT || this.keptBytes > MAX_KEPT_BYTES) this.keptBytes -= this.kept.shift()!.byteLength;
    }
  }
}
