/**
 * The worker's batch buffers: a buffer given back serves the next batch of
 * exactly its size and no other, is never lent twice, and the pool keeps no
 * more than its limits.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BatchBuffers, MAX_KEPT, MIN_KEPT_BYTES } from '../../src/actors/batchBuffers.js';

const KB = 1024;

describe('BatchBuffers', () => {
  it('serves a batch of a buffer\'s exact size from the buffers given back, and any other size fresh', () => {
    const pool = new BatchBuffers();
    const a = pool.take(128 * KB);
    expect(a.byteLength).toBe(128 * KB);
    pool.give([a]);
    expect(pool.bytes).toBe(128 * KB);
    const b = pool.take(256 * KB);
    expect(b).not.toBe(a);
    expect(b.byteLength).toBe(256 * KB);
    expect(pool.take(128 * KB)).toBe(a);
    expect(pool.bytes).toBe(0);
    expect(pool.take(128 * KB)).not.toBe(a);
  });

  it('keeps no small buffer, no buffer moved away since, and no buffer twice', () => {
    const pool = new BatchBuffers();
    pool.give([new ArrayBuffer(MIN_KEPT_BYTES - 1)]);
    const moved = new ArrayBuffer(64 * KB);
    structuredClone(moved, { transfer: [moved] });
    pool.give([moved]);
    expect(pool.bytes).toBe(0);
    const c = new ArrayBuffer(64 * KB);
    pool.give([c, c]);
    pool.give([c]);
    expect(pool.bytes).toBe(64 * KB);
    expect(pool.take(64 * KB)).toBe(c);
    expect(pool.take(64 * KB)).not.toBe(c);
  });

  it('keeps the buffers given back last, no more than its limit', () => {
    const pool = new BatchBuffers();
    const given = Array.from({ length: MAX_KEPT + 2 }, (_, i) => new ArrayBuffer((32 + i) * KB));
    pool.give(given);
    expect(pool.bytes).toBe(given.slice(2).reduce((n, b) => n + b.byteLength, 0));
    expect(pool.take(32 * KB)).not.toBe(given[0]);
    expect(pool.take((32 + MAX_KEPT + 1) * KB)).toBe(given[MAX_KEPT + 1]);
  });

  it('property: no buffer is lent to two holders at once, and every buffer lent has the size asked for', () => {
    // Invariant: between a take and the give of what it returned, no other take returns the same buffer.
    const sizes = [16 * KB, 20 * KB, 64 * KB];
    const op = fc.oneof(
      fc.record({ take: fc.constantFrom(...sizes) }),
      fc.record({ give: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const pool = new BatchBuffers();
        const lent: ArrayBuffer[] = [];
        for (const o of ops) {
          if ('take' in o) {
            const b = pool.take(o.take);
            expect(b.byteLength).toBe(o.take);
            expect(lent).not.toContain(b);
            lent.push(b);
          } else if (lent.length > 0) {
            pool.give(lent.splice(o.give % lent.length, 1));
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});
