import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mixText, parsePriorityMix, priorityPicker, type PriorityMix } from '../../bench/priorityMix.js';
import { PRIORITIES } from '../../src/transport/protocol.js';

describe('parsePriorityMix', () => {
  it('reads H,N,L as shares of high, normal and low, normalised to sum 1', () => {
    expect(parsePriorityMix('0.1,0.6,0.3')).toEqual({ high: 0.1, normal: 0.6, low: 0.3 });
    const m = parsePriorityMix(' 1, 6 ,3 ');
    expect(mixText(m)).toBe('0.1,0.6,0.3');
    expect(parsePriorityMix('0,1,0')).toEqual({ high: 0, normal: 1, low: 0 });
  });

  it('refuses anything but three non-negative numbers with a positive sum, naming the flag', () => {
    for (const bad of ['', '0.5,0.5', '0.1,0.6,0.3,0', 'a,b,c', '0.1,,0.9', '-0.1,0.6,0.5', '0,0,0', 'Infinity,1,1']) {
      expect(() => parsePriorityMix(bad), bad).toThrow(RangeError);
      expect(() => parsePriorityMix(bad), bad).toThrow(/--overload-mix/);
    }
  });
});

describe('priorityPicker', () => {
  const mixArb = fc
    .tuple(fc.nat(100), fc.nat(100), fc.nat(100))
    .filter(([h, n, l]) => h + n + l > 0)
    .map(([h, n, l]): PriorityMix => ({ high: h / (h + n + l), normal: n / (h + n + l), low: l / (h + n + l) }));

  it('keeps every prefix of the schedule within one request of the mix, and never picks a priority with share 0', () => {
    fc.assert(
      fc.property(mixArb, fc.integer({ min: 1, max: 2_000 }), (mix, n) => {
        const pick = priorityPicker(mix);
        const counts = [0, 0, 0];
        for (let i = 1; i <= n; i++) {
          counts[pick()]!++;
          for (let l = 0; l < 3; l++) {
            const share = mix[PRIORITIES[l]!];
            const off = share === 0 ? counts[l] !== 0 : !(Math.abs(counts[l]! - i * share) < 1 + 1e-9);
            if (off) expect({ after: i, counts, mix }).toBe('every count within one of its share');
          }
        }
      }),
      { numRuns: 100 },
    );
  });

  it('interleaves the priorities: 0.1,0.6,0.3 sends exactly one high request in every ten', () => {
    const pick = priorityPicker({ high: 0.1, normal: 0.6, low: 0.3 });
    const lanes = Array.from({ length: 1_000 }, pick);
    for (let i = 0; i < 1_000; i += 10) expect(lanes.slice(i, i + 10).filter((l) => l === 0)).toHaveLength(1);
    expect(lanes.filter((l) => l === 1)).toHaveLength(600);
    expect(lanes.filter((l) => l === 2)).toHaveLength(300);
  });
});
