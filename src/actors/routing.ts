/**
 * Routing policy: which node runs a request. Pure functions of the cluster
 * view, the per-node load and (for the keyless case) an injected random
 * source, so that every node with the same view makes the same keyed choice
 * and tests can drive the policy without actors or sockets. The router actor
 * owns the machinery: queues, retries, metrics, the live view.
 */

/** One node as the membership view sees it. */
export interface RouteCandidate {
  readonly nodeId: string;
  readonly state: 'joining' | 'up' | 'suspect' | 'leaving' | 'down';
  readonly models: readonly string[];
}

/** Ring construction options. */
export interface RingOptions {
  /**
   * Virtual nodes per node; default {@link DEFAULT_VNODES} (1024). A node's
   * share of the ring is the sum of V arcs, so its relative spread around the
   * fair share 1/N is about 1/sqrt(V): ~3 % at 1024, against ~10 % at 100.
   * Cost is N·V ring entries (64 nodes → 65 536 entries, 768 KiB) and one
   * extra binary-search step per doubling of V.
   */
  readonly vnodes?: number;
}

export const DEFAULT_VNODES = 1024;
/** Default ε for bounded loads: no node above ⌈1.25 · mean⌉. */
export const DEFAULT_EPSILON = 0.25;

/**
 * Node ids that are `up` and serve `model`, sorted by UTF-16 code unit
 * order and without duplicates, so the result is independent of the
 * view's order and of the locale.
 */
export function eligible(view: readonly RouteCandidate[], model: string): string[] {
  const ids: string[] = [];
  for (const c of view) {
    if (c.state === 'up' && c.models.includes(model)) ids.push(c.nodeId);
  }
  ids.sort();
  let w = 0;
  for (let r = 0; r < ids.length; r++) {
    if (w === 0 || ids[r] !== ids[w - 1]) ids[w++] = ids[r]!;
  }
  ids.length = w;
  return ids;
}

// ---------------------------------------------------------------------------
// Keyless: power of two choices with a local preference.
// ---------------------------------------------------------------------------

/** How much busier than every other node the local one must be before keyless work leaves it. */
export const LOCAL_SLACK = 0.25;

/**
 * Keyless choice among `nodes` (normally the output of {@link eligible}).
 *
 * Rule:
 * 1. No nodes → `undefined`.
 * 2. If `localId` is in `nodes` and it is not the busiest, choose it: a
 *    local request skips a network hop, and we give that up only when the
 *    local node is clearly the unique busiest, its load above
 *    (1 + {@link LOCAL_SLACK})·load + 1 of every other node. Loads of
 *    peers are a heartbeat old and a node's own swings by a batch at a time,
 *    so without the slack nodes with equal traffic forwarded about a third
 *    of it to each other for nothing. A single-node list returns that node.
 * 3. Otherwise the candidates are `nodes` without the local node (it was
 *    rejected for being the busiest, or is absent). One candidate is
 *    returned as is; with two or more, two distinct candidates are sampled
 *    uniformly with two calls to `rand` and the one with the lower load wins,
 *    ties going to the lexicographically smaller id.
 *
 * `load` should return a finite, non-negative amount of outstanding work; it
 * is called at most once per node. `rand` returns values in [0, 1) (a value
 * of 1 is clamped to the last index). The result depends on the order of
 * `nodes` only through which indices `rand` selects.
 */
export function powerOfTwoChoices(
  nodes: readonly string[],
  load: (nodeId: string) => number,
  localId: string | undefined,
  rand: () => number,
): string | undefined {
  const n = nodes.length;
  if (n === 0) return undefined;
  let candidates = nodes;
  if (localId !== undefined && nodes.includes(localId)) {
    if (n === 1) return localId;
    const localLoad = load(localId);
    let busiest = true;
    for (const id of nodes) {
      if (id !== localId && !(localLoad > (1 + LOCAL_SLACK) * load(id) + 1)) {
        busiest = false;
        break;
      }
    }
    if (!busiest) return localId;
    candidates = nodes.filter((id) => id !== localId);
  }
  const m = candidates.length;
  if (m === 1) return candidates[0];
  const i = pickIndex(rand, m);
  let j = pickIndex(rand, m - 1);
  if (j >= i) j++;
  const a = candidates[i]!;
  const b = candidates[j]!;
  const la = load(a);
  const lb = load(b);
  if (la < lb) return a;
  if (lb < la) return b;
  return a < b ? a : b;
}

function pickIndex(rand: () => number, n: number): number {
  const k = Math.floor(rand() * n);
  return k < 0 ? 0 : k >= n ? n - 1 : k;
}

// ---------------------------------------------------------------------------
// Hashing.
// ---------------------------------------------------------------------------

const FNV_OFFSET = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** FNV-1a 32 over the UTF-8 bytes of `s`, continuing from state `h`. */
function fnv1a(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      h = Math.imul(h ^ c, FNV_PRIME);
      continue;
    }
    if (c < 0x800) {
      h = Math.imul(h ^ (0xc0 | (c >> 6)), FNV_PRIME);
    } else {
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d < 0xe000) {
          i++;
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          h = Math.imul(h ^ (0xf0 | (c >> 18)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | ((c >> 12) & 63)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | ((c >> 6) & 63)), FNV_PRIME);
          h = Math.imul(h ^ (0x80 | (c & 63)), FNV_PRIME);
          continue;
        }
      }
      // BMP character, or a lone surrogate encoded as its 3-byte form
      // (WTF-8) so that distinct strings keep distinct byte sequences.
      h = Math.imul(h ^ (0xe0 | (c >> 12)), FNV_PRIME);
      h = Math.imul(h ^ (0x80 | ((c >> 6) & 63)), FNV_PRIME);
    }
    h = Math.imul(h ^ (0x80 | (c & 63)), FNV_PRIME);
  }
  return h;
}

/** MurmurHash3's fmix32 finaliser: full avalanche over all 32 bits. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * The ring's 32-bit hash: FNV-1a 32 over the string's UTF-8 bytes, then
 * MurmurHash3's fmix32 finaliser. FNV-1a alone mixes its last bytes poorly
 * into the high bits, which is exactly where `node#0`, `node#1`, … differ
 * and where a sorted ring looks; fmix32 spreads every input bit over the
 * whole word. It is byte-streaming, so the ring hashes each `${nodeId}#`
 * prefix once. Unsigned result in [0, 2^32).
 */
export function hash32(s: string): number {
  return fmix32(fnv1a(FNV_OFFSET, s));
}

// ---------------------------------------------------------------------------
// Keyed: consistent hashing with virtual nodes and bounded loads.
// ---------------------------------------------------------------------------

/** Ring entries are packed as `position · N + nodeIndex` in a float64; exact below 2^53. */
const MAX_RING_NODES = 2 ** 21;

function checkVnodes(vnodes: number): number {
  if (!Number.isSafeInteger(vnodes) || vnodes < 1) {
    throw new RangeError(`vnodes must be a positive integer, got ${vnodes}`);
  }
  return vnodes;
}

/**
 * Consistent-hash ring with virtual nodes. Node `id`'s `i`-th point sits at
 * `hash32(id + '#' + i)` for i in [0, vnodes); a key belongs to the first
 * point at or clockwise after `hash32(key)`. Node ids are deduplicated and
 * sorted first and points that collide are ordered by node id, so the ring
 * does not depend on the order of `nodeIds`.
 *
 * @throws RangeError if `vnodes` is not a positive safe integer, or there
 *   are more than 2^21 distinct nodes.
 */
export class HashRing {
  /** Distinct node ids, sorted. */
  readonly nodes: readonly string[];
  readonly vnodes: number;
  /** Ring point positions, ascending. */
  private readonly positions: Uint32Array;
  /** `owners[j]` is the index in `nodes` of the node at `positions[j]`. */
  private readonly owners: Uint32Array;

  constructor(nodeIds: readonly string[], opts: RingOptions = {}) {
    const vnodes = checkVnodes(opts.vnodes ?? DEFAULT_VNODES);
    const nodes = [...new Set(nodeIds)].sort();
    const n = nodes.length;
    if (n > MAX_RING_NODES) throw new RangeError(`a ring holds at most ${MAX_RING_NODES} nodes, got ${n}`);
    const packed = new Float64Array(n * vnodes);
    for (let k = 0; k < n; k++) {
      const prefix = fnv1a(FNV_OFFSET, `${nodes[k]}#`);
      for (let i = 0; i < vnodes; i++) {
        packed[k * vnodes + i] = fmix32(fnv1a(prefix, String(i))) * n + k;
      }
    }
    packed.sort();
    const positions = new Uint32Array(packed.length);
    const owners = new Uint32Array(packed.length);
    for (let j = 0; j < packed.length; j++) {
      const v = packed[j]!;
      const k = v % n;
      owners[j] = k;
      positions[j] = (v - k) / n;
    }
    this.nodes = nodes;
    this.vnodes = vnodes;
    this.positions = positions;
    this.owners = owners;
  }

  /** The node owning `key`; `undefined` for an empty ring. */
  owner(key: string): string | undefined {
    if (this.positions.length === 0) return undefined;
    return this.nodes[this.owners[this.pointAfter(hash32(key))]!];
  }

  /**
   * The first node met walking clockwise from `key`'s position for which
   * `accept(nodeId, index)` is true, where `index` is the node's index in
   * {@link nodes}. Each node is offered at most once, in the order first met,
   * so `accept(owner(key))` comes first. `undefined` if none is accepted or
   * the ring is empty.
   */
  successor(key: string, accept: (nodeId: string, index: number) => boolean): string | undefined {
    const len = this.positions.length;
    if (len === 0) return undefined;
    const nodes = this.nodes;
    const owners = this.owners;
    const n = nodes.length;
    let j = this.pointAfter(hash32(key));
    const first = owners[j]!;
    if (accept(nodes[first]!, first)) return nodes[first];
    if (n === 1) return undefined;
    // Only reached when the home node is full: allocate the visited set lazily.
    const seen = new Uint8Array(n);
    seen[first] = 1;
    let met = 1;
    for (let step = 1; step < len && met < n; step++) {
      j = j + 1 === len ? 0 : j + 1;
      const k = owners[j]!;
      if (seen[k] === 0) {
        seen[k] = 1;
        met++;
        if (accept(nodes[k]!, k)) return nodes[k];
      }
    }
    return undefined;
  }

  /** Index of the first point with position ≥ h, wrapping to 0 past the end. */
  private pointAfter(h: number): number {
    const pos = this.positions;
    let lo = 0;
    let hi = pos.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (pos[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    return lo === pos.length ? 0 : lo;
  }
}

/**
 * Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
 * "Consistent Hashing with Bounded Loads", SODA 2018). Walks clockwise from
 * `key`'s position and returns the first node whose load is below the
 * capacity `⌈(1 + ε) · (totalLoad + 1) / N⌉`, where totalLoad sums `load`
 * over `ring.nodes` and the `+ 1` counts the request being placed. Placing
 * keys one at a time this way keeps every node at or under
 * `⌈(1 + ε) · keys / N⌉`, while a node's overflow moves to its ring
 * successors, so most keys keep their home.
 *
 * `load` is called once per ring node and should be finite and
 * non-negative; in that case some node is always under capacity. If none is
 * (inconsistent loads), the plain ring owner is returned.
 *
 * @param epsilon default {@link DEFAULT_EPSILON} (0.25).
 * @returns `undefined` for an empty ring.
 * @throws RangeError if `epsilon` is not a number > 0.
 */
export function boundedLoadOwner(
  ring: HashRing,
  key: string,
  load: (nodeId: string) => number,
  epsilon: number = DEFAULT_EPSILON,
): string | undefined {
  if (!(epsilon > 0)) throw new RangeError(`epsilon must be > 0, got ${epsilon}`);
  const nodes = ring.nodes;
  const n = nodes.length;
  if (n === 0) return undefined;
  const loads = new Float64Array(n);
  let total = 0;
  for (let k = 0; k < n; k++) {
    const l = load(nodes[k]!);
    loads[k] = l;
    total += l;
  }
  const capacity = Math.ceil(((1 + epsilon) * (total + 1)) / n);
  return ring.successor(key, (_, k) => loads[k]! < capacity) ?? ring.owner(key);
}

/** Rings for recently seen eligible sets; membership changes rarely, so a few suffice. */
const RING_CACHE_SIZE = 16;
const ringsBySet = new Map<string, HashRing | null>();
/** Per view snapshot: `${vnodes} ${model}` → ring, or null when no node is eligible. */
const ringsByView = new WeakMap<readonly RouteCandidate[], Map<string, HashRing | null>>();

function ringFor(view: readonly RouteCandidate[], model: string, vnodes: number): HashRing | null {
  let perView = ringsByView.get(view);
  if (!perView) ringsByView.set(view, (perView = new Map()));
  const viewKey = `${vnodes} ${model}`;
  const hit = perView.get(viewKey);
  if (hit !== undefined) return hit;
  const ids = eligible(view, model);
  // NUL cannot collide with a separator inside ids the way ',' could.
  const setKey = `${vnodes}\u0000${ids.join('\u0000')}`;
  let ring = ringsBySet.get(setKey);
  if (ring !== undefined) {
    // Re-insert so that the Map's insertion order is least recently used first.
    ringsBySet.delete(setKey);
  } else {
    ring = ids.length === 0 ? null : new HashRing(ids, { vnodes });
    if (ringsBySet.size >= RING_CACHE_SIZE) ringsBySet.delete(ringsBySet.keys().next().value!);
  }
  ringsBySet.set(setKey, ring);
  perView.set(viewKey, ring);
  return ring;
}

/**
 * Keyed choice for `model`: {@link boundedLoadOwner} over a ring of the
 * {@link eligible} nodes. The result depends only on the view's contents,
 * the key and the loads, never on the view's order.
 *
 * Rings are cached so that the request path pays neither for building a
 * ring nor for recomputing the eligible set: per eligible set (the last 16
 * sets), and per view array by identity (held weakly). The view is
 * therefore treated as an immutable snapshot, as its `readonly` type says:
 * when membership changes, pass a new array rather than editing this one.
 * A router that holds its own ring per membership epoch can call
 * {@link boundedLoadOwner} directly instead.
 *
 * @param epsilon default 0.25.
 * @returns `undefined` when no node is eligible.
 * @throws RangeError if `epsilon` is not > 0 or `opts.vnodes` is invalid.
 */
export function routeKeyed(
  view: readonly RouteCandidate[],
  model: string,
  key: string,
  load: (nodeId: string) => number,
  epsilon: number = DEFAULT_EPSILON,
  opts: RingOptions = {},
): string | undefined {
  if (!(epsilon > 0)) throw new RangeError(`epsilon must be > 0, got ${epsilon}`);
  const ring = ringFor(view, model, checkVnodes(opts.vnodes ?? DEFAULT_VNODES));
  return ring === null ? undefined : boundedLoadOwner(ring, key, load, epsilon);
}
