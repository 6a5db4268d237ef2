import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_CHUNK_BYTES, MIN_TENSOR_BYTES, TensorArena, type ArenaHolder } from '../../src/actors/tensorArena.js';
import type { WireTensor } from '../../src/transport/protocol.js';

/** A float32 tensor of `bytes` bytes whose every byte is `fill`, as a view into a larger "frame". */
function tensor(bytes: number, fill: number): WireTensor {
  const frame = new Uint8Array(bytes + 64).fill(0xee);
  const data = frame.subarray(32, 32 + bytes).fill(fill);
  return { dtype: 'float32', shape: [1, bytes / 4], data };
}

const holder = (...tensors: WireTensor[]): ArenaHolder => ({ inputs: Object.fromEntries(tensors.map((t, i) => [`in${i}`, t])) });
const bytesOf = (h: ArenaHolder) => Object.values(h.inputs).map((t) => [...new Set(t.data)]);

describe('TensorArena', () => {
  it('copies held tensors out of their frames and takes its chunks back for the next request', () => {
    const arena = new TensorArena(64 * 1024 * 1024);
    const a = holder(tensor(110_592, 1));
    const frameA = a.inputs['in0']!.data.buffer;
    arena.hold(a);
    expect(a.inputs['in0']!.data.buffer).not.toBe(frameA);
    expect(a.inputs['in0']!.data.byteLength).toBe(110_592);
    expect(bytesOf(a)).toEqual([[1]]);
    expect(arena.lentOut).toBe(128 * 1024);
    const slab = a.inputs['in0']!.data.buffer;
    arena.release(a);
    expect(arena.lentOut).toBe(0);
    expect(a.held).toBeUndefined();
    const b = holder(tensor(110_592, 2));
    arena.hold(b);
    expect(b.inputs['in0']!.data.buffer).toBe(slab);
    expect(arena.bytes).toBe(4 * 1024 * 1024);
  });

  it('leaves small, oversized and over-capacity tensors in their frames', () => {
    const arena = new TensorArena(4 * 1024 * 1024);
    const small = tensor(MIN_TENSOR_BYTES - 4, 3);
    const big = tensor(MAX_CHUNK_BYTES + 4, 4);
    const h = holder(small, big);
    arena.hold(h);
    expect(h.inputs['in0']!.data).toBe(small.data);
    expect(h.inputs['in1']!.data).toBe(big.data);
    expect(h.held).toBeUndefined();
    // One 4 MiB slab holds 32 chunks of 128 KiB; the 33rd request keeps its frame.
    const held = Array.from({ length: 33 }, (_, i) => holder(tensor(100_000, i)));
    for (const x of held) arena.hold(x);
    expect(held.filter((x) => x.held !== undefined)).toHaveLength(32);
    expect(held[32]!.held).toBeUndefined();
    expect(arena.bytes).toBe(4 * 1024 * 1024);
    expect(held.map((x, i) => bytesOf(x)[0]![0] === i)).toEqual(held.map(() => true));
  });

  it('copies the tensors of a request it lets go with keep, so reusing the chunk changes nothing', () => {
    const arena = new TensorArena(8 * 1024 * 1024);
    const a = holder(tensor(65_536, 5), tensor(20_000, 6));
    arena.hold(a);
    arena.release(a, true);
    expect(arena.lentOut).toBe(0);
    const b = holder(tensor(65_536, 7), tensor(20_000, 8));
    arena.hold(b);
    expect(bytesOf(a)).toEqual([[5], [6]]);
    expect(bytesOf(b)).toEqual([[7], [8]]);
  });

  it('gives nothing back twice: a second release of a holder is a no-op', () => {
    const arena = new TensorArena(8 * 1024 * 1024);
    const a = holder(tensor(32_768, 1));
    arena.hold(a);
    const chunks = a.held!;
    arena.release(a);
    arena.release(a);
    arena.release({ inputs: {}, held: chunks }); // a stale copy of the chunk list
    const b = holder(tensor(32_768, 2));
    const c = holder(tensor(32_768, 3));
    arena.hold(b);
    arena.hold(c);
    expect(b.inputs['in0']!.data.buffer === c.inputs['in0']!.data.buffer && b.inputs['in0']!.data.byteOffset === c.inputs['in0']!.data.byteOffset).toBe(false);
    expect(bytesOf(b)).toEqual([[2]]);
    expect(bytesOf(c)).toEqual([[3]]);
  });

  it('invariant: tensors held at the same time never share bytes, and each keeps its own content (seed printed on failure)', () => {
    const sizes = fc.constantFrom(16_384, 20_000, 65_536, 110_592, 300_000);
    const op = fc.oneof(
      fc.record({ t: fc.constant('hold' as const), bytes: sizes }),
      fc.record({ t: fc.constant('release' as const), pick: fc.nat(), keep: fc.boolean() }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 120 }), (ops) => {
        const arena = new TensorArena(16 * 1024 * 1024);
        const live: { h: ArenaHolder; fill: number }[] = [];
        const kept: { h: ArenaHolder; fill: number }[] = [];
        let next = 0;
        for (const o of ops) {
          if (o.t === 'hold') {
            const fill = next++ % 251;
            const h = holder(tensor(o.bytes, fill));
            arena.hold(h);
            live.push({ h, fill });
          } else if (live.length > 0) {
            const [x] = live.splice(o.pick % live.length, 1);
            arena.release(x!.h, o.keep);
            if (o.keep) kept.push(x!);
          }
          for (const x of [...live, ...kept]) expect(bytesOf(x.h)).toEqual([[x.fill]]);
        }
        const lent = live.reduce((n, x) => n + (x.h.held?.reduce((m, c) => m + c.byteLength, 0) ?? 0), 0);
        expect(arena.lentOut).toBe(lent);
      }),
      { numRuns: 60 },
    );
  });

  it('refuses a size it cannot honour', () => {
    expect(() => new TensorArena(-1)).toThrow(RangeError);
    expect(() => new TensorArena(1.5)).toThrow(RangeError);
  });
});
