import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  boundedLoadOwner,
  eligible,
  hash32,
  HashRing,
  LOCAL_SLACK,
  powerOfTwoChoices,
  routeKeyed,
  type RouteCandidate,
} from '../../src/actors/routing.js';

// ---------------------------------------------------------------------------
// Arbitraries. Sizes are tuned so that the whole file stays well under 20 s
// on a slow 2-core machine: a 64-node ring with 1024 vnodes costs ~10 ms to
// build there, so the ring-heavy properties run a few dozen cases each.
// ---------------------------------------------------------------------------

const STATES = ['joining', 'up', 'suspect', 'leaving', 'down'] as const;
const MODELS = ['m1', 'm2', 'm3'] as const;

const nodeIdArb = fc.string({ minLength: 1, maxLength: 10, unit: 'grapheme' });
const nodeIdsArb = (minLength: number, maxLength: number) =>
  fc.uniqueArray(nodeIdArb, { minLength, maxLength, size: 'max' });

const viewArb: fc.Arbitrary<RouteCandidate[]> = fc.uniqueArray(
  fc.record({
    nodeId: nodeIdArb,
    state: fc.constantFrom(...STATES),
    models: fc.subarray([...MODELS]),
  }),
  { maxLength: 12, selector: (c) => c.nodeId },
);

/** A model name that may or may not be served by anyone. */
const modelArb = fc.constantFrom('m1', 'm2', 'm3', 'absent');

/** Loads per node id, defaulting to 0 for ids the record lacks. */
const loadsArb = fc.dictionary(nodeIdArb, fc.nat({ max: 20 }), { maxKeys: 20 });
const loadFn = (loads: Readonly<Record<string, number>>) => (id: string): number =>
  Object.hasOwn(loads, id) ? loads[id]! : 0;

/** An injected random source that replays `values` in a cycle. */
const randArb = fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 8 });
const cycle = (values: readonly number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};

/** A permutation of `xs`, driven by generated sort keys. */
const permute = <T>(xs: readonly T[], sortKeys: readonly number[]): T[] =>
  xs
    .map((x, i) => [x, sortKeys[i % sortKeys.length]! + i / (xs.length + 1)] as const)
    .sort((a, b) => a[1] - b[1])
    .map(([x]) => x);
const sortKeysArb = fc.array(fc.nat(), { minLength: 1, maxLength: 64 });

/** Unique keys: either arbitrary strings or a sequential `prefix + i` family. */
const keySetArb = (minLength: number, maxLength: number): fc.Arbitrary<string[]> =>
  fc.oneof(
    fc.uniqueArray(fc.string({ maxLength: 16, unit: 'binary' }), { minLength, maxLength, size: 'max' }),
    fc
      .record({ prefix: fc.string({ maxLength: 8 }), count: fc.integer({ min: minLength, max: maxLength }) })
      .map(({ prefix, count }) => Array.from({ length: count }, (_, i) => `${prefix}${i}`)),
  );

const EPSILONS = [0.1, 0.25, 0.5, 1] as const;

// ---------------------------------------------------------------------------
// Keyed routing.
// ---------------------------------------------------------------------------

describe('keyed routing', () => {
  it('keyed distribution stays within (1+ε)·mean for any 1–64 nodes and any key set', () => {
    fc.assert(
      fc.property(nodeIdsArb(1, 64), keySetArb(1, 3000), fc.constantFrom(...EPSILONS), (ids, keys, epsilon) => {
        const ring = new HashRing(ids);
        const loads = new Map(ids.map((id) => [id, 0]));
        const load = (id: string): number => loads.get(id)!;
        for (const key of keys) {
          const owner = boundedLoadOwner(ring, key, load, epsilon)!;
          loads.set(owner, load(owner) + 1);
        }
        const bound = Math.ceil(((1 + epsilon) * keys.length) / ring.nodes.length);
        expect(Math.max(...loads.values())).toBeLessThanOrEqual(bound);
        expect([...loads.values()].reduce((a, b) => a + b, 0)).toBe(keys.length);
      }),
      { numRuns: 40 },
    );
  });

  it('adding or removing one node moves at most 1/N + 0.05 of keys', () => {
    // Statistical, not exact: with 1024 vnodes the toggled node's ring share
    // spreads by ~1/(N·√1024) around 1/N, and the sampled keys add binomial
    // noise, so at N = 2 the bound sits only ~3.2σ (2000 keys) to ~3.7σ
    // (4000 keys) out. Offline, 6438 two-node cases produced one breach
    // (0.5565 for nodes "᠒🙎","𝆹𝅥𝅯" and keys "qUP0".."qUP1999"); murmur3_32
    // gives the same spread, so the hash is not the cause. Expect this
    // property to fail about once in a few thousand runs of the file.
    fc.assert(
      fc.property(
        nodeIdsArb(2, 64),
        fc.nat(),
        fc.boolean(),
        keySetArb(2000, 4000),
        (ids, pick, removing, keys) => {
          const toggled = ids[pick % ids.length]!;
          const without = ids.filter((id) => id !== toggled);
          const before = new HashRing(removing ? ids : without);
          const after = new HashRing(removing ? without : ids);
          let moved = 0;
          for (const key of keys) {
            const a = before.owner(key);
            const b = after.owner(key);
            // Only keys of the removed node move, and only to the added node.
            if (removing) expect(a === toggled).toBe(a !== b);
            else expect(b === toggled).toBe(a !== b);
            if (a !== b) moved++;
          }
          expect(moved / keys.length).toBeLessThanOrEqual(1 / ids.length + 0.05);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('the keyed choice is a pure function of (view, key)', () => {
    fc.assert(
      fc.property(
        viewArb,
        modelArb,
        fc.string({ unit: 'binary' }),
        loadsArb,
        sortKeysArb,
        fc.constantFrom(...EPSILONS),
        (view, model, key, loads, sortKeys, epsilon) => {
          const load = loadFn(loads);
          const shuffled = permute(view, sortKeys);
          const ids = eligible(view, model);
          expect(eligible(shuffled, model)).toEqual(ids);

          const ring = new HashRing(ids);
          // Built twice, from the ids in another order: the same ring.
          expect(new HashRing(permute(ids, sortKeys))).toEqual(ring);

          const expected = ids.length === 0 ? undefined : boundedLoadOwner(ring, key, load, epsilon);
          expect(routeKeyed(view, model, key, load, epsilon)).toBe(expected);
          expect(routeKeyed(shuffled, model, key, load, epsilon)).toBe(expected);
          // Copies defeat the per-view cache, so this goes through the eligible-set cache or a fresh ring.
          expect(routeKeyed([...shuffled], model, key, load, epsilon)).toBe(expected);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('the ring owner is the bounded-load choice whenever no node is loaded', () => {
    fc.assert(
      fc.property(nodeIdsArb(1, 16), fc.string({ unit: 'binary' }), (ids, key) => {
        const ring = new HashRing(ids, { vnodes: 64 });
        expect(boundedLoadOwner(ring, key, () => 0)).toBe(ring.owner(key));
      }),
    );
  });

  it('a full home node sends the key to the next distinct node clockwise', () => {
    fc.assert(
      fc.property(nodeIdsArb(2, 16), fc.string({ unit: 'binary' }), (ids, key) => {
        const ring = new HashRing(ids, { vnodes: 64 });
        const home = ring.owner(key)!;
        const next = ring.successor(key, (id) => id !== home);
        expect(next).toBeDefined();
        expect(next).not.toBe(home);
        // Home holds all 1000 units: capacity ⌈1.25 · 1001 / N⌉ ≤ 626 for N ≥ 2, so home is full.
        const load = (id: string) => (id === home ? 1000 : 0);
        expect(boundedLoadOwner(ring, key, load, 0.25)).toBe(next);
      }),
    );
  });

  it('a single-node ring owns every key', () => {
    fc.assert(
      fc.property(nodeIdArb, fc.string({ unit: 'binary' }), fc.nat({ max: 100 }), (id, key, l) => {
        const ring = new HashRing([id, id]);
        expect(ring.nodes).toEqual([id]);
        expect(ring.owner(key)).toBe(id);
        expect(boundedLoadOwner(ring, key, () => l)).toBe(id);
      }),
    );
  });

  it('an empty ring owns nothing and bounded loads return undefined', () => {
    const ring = new HashRing([]);
    expect(ring.nodes).toEqual([]);
    expect(ring.owner('k')).toBeUndefined();
    expect(ring.successor('k', () => true)).toBeUndefined();
    expect(boundedLoadOwner(ring, 'k', () => 0)).toBeUndefined();
    expect(routeKeyed([{ nodeId: 'a', state: 'down', models: ['m'] }], 'm', 'k', () => 0)).toBeUndefined();
  });

  it('boundedLoadOwner rejects epsilon ≤ 0 or NaN with a RangeError', () => {
    const ring = new HashRing(['a', 'b']);
    for (const epsilon of [0, -0.25, -1, Number.NaN]) {
      expect(() => boundedLoadOwner(ring, 'k', () => 0, epsilon)).toThrow(RangeError);
      expect(() => boundedLoadOwner(ring, 'k', () => 0, epsilon)).toThrow(/epsilon must be > 0/);
      expect(() => routeKeyed([], 'm', 'k', () => 0, epsilon)).toThrow(RangeError);
    }
  });

  it('a ring rejects a vnode count that is not a positive integer with a RangeError', () => {
    for (const vnodes of [0, -1, 1.5, Number.NaN]) {
      expect(() => new HashRing(['a'], { vnodes })).toThrow(RangeError);
      expect(() => routeKeyed([], 'm', 'k', () => 0, 0.25, { vnodes })).toThrow(RangeError);
    }
  });

  it('a new view whose eligible set changed is routed on a ring of that set', () => {
    const up = (nodeId: string): RouteCandidate => ({ nodeId, state: 'up', models: ['m'] });
    expect(routeKeyed([up('a')], 'm', 'k', () => 0)).toBe('a');
    expect(routeKeyed([up('b')], 'm', 'k', () => 0)).toBe('b');
    expect(routeKeyed([{ ...up('a'), state: 'leaving' }, up('c')], 'm', 'k', () => 0)).toBe('c');
  });

  it('hash32 is FNV-1a 32 over UTF-8 bytes finalised by murmur3 fmix32', () => {
    const fmix32 = (h: number) => {
      h ^= h >>> 16;
      h = Math.imul(h, 0x85ebca6b);
      h ^= h >>> 13;
      h = Math.imul(h, 0xc2b2ae35);
      h ^= h >>> 16;
      return h >>> 0;
    };
    // Published FNV-1a 32 test vectors.
    expect(hash32('')).toBe(fmix32(0x811c9dc5));
    expect(hash32('a')).toBe(fmix32(0xe40c292c));
    expect(hash32('foobar')).toBe(fmix32(0xbf9cf968));
    // The inline UTF-8 encoder agrees with the platform's, surrogate pairs included.
    const fnv = (bytes: Uint8Array) => bytes.reduce((h, b) => Math.imul(h ^ b, 0x01000193), 0x811c9dc5);
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => {
        expect(hash32(s)).toBe(fmix32(fnv(new TextEncoder().encode(s))));
      }),
    );
  });
});

// ---------------------------------------------------------------------------
// Keyless routing.
// ---------------------------------------------------------------------------

describe('keyless routing', () => {
  it('eligible lists exactly the up nodes serving the model, sorted, whatever the view order', () => {
    fc.assert(
      fc.property(viewArb, modelArb, sortKeysArb, (view, model, sortKeys) => {
        const ids = eligible(permute(view, sortKeys), model);
        const expected = view
          .filter((c) => c.state === 'up' && c.models.includes(model))
          .map((c) => c.nodeId)
          .sort();
        expect(ids).toEqual(expected);
      }),
    );
  });

  it('the keyless choice never picks a node that is down, suspect, leaving, joining or does not serve the model', () => {
    fc.assert(
      fc.property(
        viewArb,
        modelArb,
        loadsArb,
        randArb,
        fc.option(fc.nat(), { nil: undefined }),
        fc.option(nodeIdArb, { nil: undefined }),
        (view, model, loads, rands, pick, other) => {
          // Often the local node is one of the view's, in whatever state; otherwise absent or unknown.
          const localId = pick !== undefined && view.length > 0 ? view[pick % view.length]!.nodeId : other;
          const nodes = eligible(view, model);
          const chosen = powerOfTwoChoices(nodes, loadFn(loads), localId, cycle(rands));
          if (chosen === undefined) {
            expect(nodes).toEqual([]);
            expect(view.some((c) => c.state === 'up' && c.models.includes(model))).toBe(false);
            return;
          }
          const candidate = view.find((c) => c.nodeId === chosen);
          expect(candidate).toBeDefined();
          expect(candidate!.state).toBe('up');
          expect(candidate!.models).toContain(model);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('the keyless choice prefers the local node unless it is the busiest by a margin: above (1 + LOCAL_SLACK)·load + 1 of every other node', () => {
    fc.assert(
      fc.property(nodeIdsArb(1, 12), fc.nat(), fc.array(fc.nat({ max: 12 }), { minLength: 12, maxLength: 12 }), randArb, (ids, pick, ls, rands) => {
        const local = ids[pick % ids.length]!;
        const loads = new Map(ids.map((id, i) => [id, ls[i]!]));
        const load = (id: string): number => loads.get(id)!;
        const chosen = powerOfTwoChoices(ids, load, local, cycle(rands));
        const busiest = ids.every((id) => id === local || load(local) > (1 + LOCAL_SLACK) * load(id) + 1);
        if (ids.length === 1 || !busiest) expect(chosen).toBe(local);
        else {
          expect(chosen).not.toBe(local);
          expect(ids).toContain(chosen);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('without a usable local node, the keyless choice never picks the unique busiest of two or more nodes', () => {
    fc.assert(
      fc.property(nodeIdsArb(2, 12), fc.array(fc.nat({ max: 5 }), { minLength: 12, maxLength: 12 }), randArb, fc.option(nodeIdArb), (ids, ls, rands, local) => {
        const loads = new Map(ids.map((id, i) => [id, ls[i]!]));
        const load = (id: string): number => loads.get(id) ?? 0;
        const localId = local === null || ids.includes(local) ? undefined : local;
        const chosen = powerOfTwoChoices(ids, load, localId, cycle(rands))!;
        expect(ids).toContain(chosen);
        expect(ids.some((id) => id !== chosen && load(id) >= load(chosen))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('between two nodes the keyless choice takes the less loaded, ties to the smaller id, whatever rand says', () => {
    fc.assert(
      fc.property(nodeIdsArb(2, 2), fc.nat({ max: 3 }), fc.nat({ max: 3 }), randArb, (ids, la, lb, rands) => {
        const [a, b] = ids as [string, string];
        const load = (id: string) => (id === a ? la : lb);
        const expected = la < lb ? a : lb < la ? b : a < b ? a : b;
        expect(powerOfTwoChoices(ids, load, undefined, cycle(rands))).toBe(expected);
        expect(powerOfTwoChoices([b, a], load, undefined, cycle(rands))).toBe(expected);
      }),
    );
  });

  it('the keyless choice is undefined for no nodes and the node itself for one', () => {
    const rand = () => 0.5;
    expect(powerOfTwoChoices([], () => 0, undefined, rand)).toBeUndefined();
    expect(powerOfTwoChoices([], () => 0, 'a', rand)).toBeUndefined();
    expect(powerOfTwoChoices(['a'], () => 9, 'a', rand)).toBe('a');
    expect(powerOfTwoChoices(['a'], () => 9, 'b', rand)).toBe('a');
    // A rand that returns exactly 1 is clamped rather than indexing past the end.
    expect(['a', 'b', 'c']).toContain(powerOfTwoChoices(['a', 'b', 'c'], () => 0, undefined, () => 1));
  });
});
