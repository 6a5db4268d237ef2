/**
 * Fuzzing the client frame decoder and schema check, without sockets:
 * `decodeUntrusted` either decodes or throws, fast and without allocating
 * far beyond its input; `parseClientFrame` never throws and accepts exactly
 * the frames the protocol documents; no prototype changes, whatever comes in.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import { parseClientFrame, type ParsedFrame } from '../../src/transport/protocol.js';
import {
  HEADERS,
  HOLES,
  PROTO_KEYS,
  bytes,
  deepNesting,
  documentedSchema,
  foreignPrototype,
  header,
  isRequestId,
  maxCount,
  mutate,
  mutationArb,
  own,
  packPlain,
  packedValueArb,
  protoKeyFrameArb,
  prototypeChanges,
  snapshotPrototypes,
  validFrameArb,
  type HeaderKind,
  type Hole,
  type NestKind,
  type ProtoSnapshot,
} from './hostile.js';

/** Per call. A hang or a superlinear path shows up far above it; one slow call is re-timed once (GC). */
const CALL_MS = 100;

/** msgpackr's class for the never-used 0xc1 byte: the only non-built-in prototype a decode may produce. */
// The structure check refuses 0xc1 before msgpackr could turn it into a C1Type: no foreign prototype is allowed.
const C1_PROTO = new Set<object>();

/** A frame decoded after every hostile one: the decoder keeps module state, which must not leak across frames. */
const CANARY = { t: 'infer', id: 'canary', model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: new Uint8Array(16) } } };
const CANARY_BYTES = encode(CANARY);
const CANARY_DECODED = decodeUntrusted(CANARY_BYTES);

interface Probe {
  ms: number;
  decoded: boolean;
  value?: unknown;
  error?: unknown;
  parsed?: ParsedFrame;
}

function probeOnce(frame: Uint8Array): Probe {
  const t0 = performance.now();
  let value: unknown;
  try {
    value = decodeUntrusted(frame);
  } catch (error) {
    return { ms: performance.now() - t0, decoded: false, error };
  }
  // A throw here is a failure in itself: the session would crash on this frame.
  const parsed = parseClientFrame(value);
  return { ms: performance.now() - t0, decoded: true, value, parsed };
}

function probe(frame: Uint8Array): Probe {
  const first = probeOnce(frame);
  return first.ms < CALL_MS ? first : probeOnce(frame);
}

/** Everything the suite holds of any frame, whatever produced it. */
function checkFrame(frame: Uint8Array): Probe {
  const p = probe(frame);
  expect(p.ms, 'decode + parse took too long').toBeLessThan(CALL_MS);
  if (!p.decoded) {
    expect(p.error).toBeInstanceOf(Error);
  } else {
    const parsed = p.parsed!;
    // Sound and complete against the documented schema.
    expect(parsed.ok, `parseClientFrame ${parsed.ok ? 'accepted' : 'refused'} ${describeValue(p.value)}`).toBe(documentedSchema(p.value));
    if (!parsed.ok) {
      expect(typeof parsed.message).toBe('string');
      // The id it recovers for the error frame is the frame's own, and only a valid one.
      if (parsed.id !== null) {
        expect(isRequestId(parsed.id)).toBe(true);
        expect(parsed.id).toBe((p.value as Record<string, unknown>)['id']);
      }
    }
    expect(foreignPrototype(p.value, C1_PROTO), 'decoded object with a non-built-in prototype').toBeUndefined();
  }
  expect(decodeUntrusted(CANARY_BYTES), 'decoder state leaked into the next frame').toEqual(CANARY_DECODED);
  return p;
}

function describeValue(v: unknown): string {
  try {
    return JSON.stringify(v, (_, x: unknown) => (typeof x === 'bigint' ? `${x}n` : x instanceof Uint8Array ? `<${x.constructor.name} ${x.length}>` : x))?.slice(0, 300) ?? String(v);
  } catch {
    return Object.prototype.toString.call(v);
  }
}

let protos: ProtoSnapshot;
beforeEach(() => {
  protos = snapshotPrototypes();
});
afterEach(() => {
  expect(prototypeChanges(protos, snapshotPrototypes())).toEqual([]);
});

/** Runs the frame checks and, after every frame, the prototype check (so a counterexample names the frame). */
const frameProperty = (arb: fc.Arbitrary<Uint8Array>) =>
  fc.property(arb, (frame) => {
    checkFrame(frame);
    expect(prototypeChanges(protos, snapshotPrototypes())).toEqual([]);
  });

describe('decodeUntrusted and parseClientFrame under hostile input', () => {
  it('invariant: any byte string is decoded or refused within 100 ms and parseClientFrame never throws', () => {
    const headerBytes = [0xc1, 0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x80, 0x8f, 0x90, 0x9f];
    const arb = fc.oneof(
      fc.uint8Array({ maxLength: 300 }),
      // Starting with a map or an extension header gets random bytes past the first byte more often.
      fc.tuple(fc.constantFrom(...headerBytes), fc.uint8Array({ maxLength: 64 })).map(([h, rest]) => bytes(h, rest)),
    );
    fc.assert(frameProperty(arb), { numRuns: 3000 });
  });

  it('invariant: msgpack values of every type (extensions, records, typed arrays, dates, maps, sets, big ints) never crash the check or slip past the schema', () => {
    fc.assert(frameProperty(packedValueArb), { numRuns: 1500 });
  });

  it('invariant: every frame the protocol documents is accepted as it was sent', () => {
    fc.assert(
      fc.property(validFrameArb, (frame) => {
        const p = checkFrame(encode(frame));
        expect(p.parsed?.ok).toBe(true);
      }),
      { numRuns: 500 },
    );
  });

  it('invariant: mutated valid frames (bit flips, truncations, splices, corrupted length fields) are decoded or refused, never mis-accepted', () => {
    const arb = fc.tuple(validFrameArb, fc.array(mutationArb, { minLength: 1, maxLength: 4 })).map(([f, ms]) => mutate(encode(f), ms));
    fc.assert(frameProperty(arb), { numRuns: 3000 });
  });

  it('invariant: __proto__, constructor and prototype keys at every level never change a prototype', () => {
    fc.assert(frameProperty(protoKeyFrameArb), { numRuns: 1000 });
    // A decoded __proto__ key never becomes the object's prototype, at the root or below.
    const v = decodeUntrusted(packPlain(own([['__proto__', { polluted: 'yes' }], ['t', 'infer']]))) as Record<string, unknown>;
    expect(Object.getPrototypeOf(v)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    expect(parseClientFrame(v)).toMatchObject({ ok: false, id: null });
  });

  it('invariant: a map where a string belongs (t: {toString: 1}) is refused with a message, not an exception', () => {
    for (const t of [{ toString: 1 }, { valueOf: 1, toString: 2 }, [1, 2], new Uint8Array(4), null]) {
      const p = checkFrame(encode({ t, id: 'x' }));
      expect(p.parsed).toMatchObject({ ok: false, id: 'x' });
    }
  });

  it('invariant: nesting 10 000 deep (arrays, maps, __proto__ maps, sets, extensions) is refused or decoded within 100 ms', () => {
    const kinds: NestKind[] = ['array', 'map', 'protoMap', 'set', 'array32', 'extWrapped', 'mixed'];
    for (const kind of kinds) {
      for (const hole of ['root', 'inputs', 'data'] as Hole[]) {
        for (const truncated of [false, true]) checkFrame(HOLES[hole](deepNesting(kind, 10_000, truncated)));
      }
    }
    fc.assert(
      fc.property(fc.constantFrom(...kinds), fc.integer({ min: 1, max: 20_000 }), fc.boolean(), (kind, depth, truncated) => {
        checkFrame(deepNesting(kind, depth, truncated));
      }),
      { numRuns: 150 },
    );
  });

  it('invariant: headers declaring up to 2^32−1 entries or bytes with nothing behind them fail fast and allocate nothing', () => {
    const kinds = Object.keys(HEADERS) as HeaderKind[];
    const holes = Object.keys(HOLES) as Hole[];
    const arb = fc
      .record({
        kind: fc.constantFrom(...kinds),
        count: fc.oneof(fc.constant('max' as const), fc.constant('half' as const), fc.nat()),
        extType: fc.constantFrom(0x70, 0x69, 0x72, 0x73, 0x74, 0x42, 0x62, 0x65, 0x78, 0xff, 0x00, 0x01),
        tail: fc.uint8Array({ maxLength: 16 }),
        hole: fc.constantFrom(...holes),
      })
      .map(({ kind, count, extType, tail, hole }) => {
        const n = count === 'max' ? maxCount(kind) : count === 'half' ? Math.floor(maxCount(kind) / 2) + 1 : count % (maxCount(kind) + 1);
        return HOLES[hole](bytes(header(kind, n, extType), tail));
      });
    const before = process.memoryUsage();
    for (const kind of kinds) for (const hole of holes) checkFrame(HOLES[hole](header(kind, maxCount(kind))));
    fc.assert(
      fc.property(arb, (frame) => {
        const m0 = process.memoryUsage();
        checkFrame(frame);
        const m1 = process.memoryUsage();
        // Loose: a huge declared length that was honoured would show as at least hundreds of MiB.
        expect(m1.arrayBuffers - m0.arrayBuffers, 'array buffers grew').toBeLessThan(16 * 2 ** 20);
        expect(m1.heapUsed - m0.heapUsed, 'heap grew').toBeLessThan(64 * 2 ** 20);
      }),
      { numRuns: 600 },
    );
    const after = process.memoryUsage();
    expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(32 * 2 ** 20);
    expect(after.rss - before.rss).toBeLessThan(256 * 2 ** 20);
  });

  it('invariant: extension 0x70 pointers, 0x69 ids and 0x72 records from a client never resolve, leak or pollute', () => {
    const frames: Uint8Array[] = [
      bytes(0xd6, 0x70, 0, 0, 0, 1), // pointer to id 1, never defined
      bytes(0x92, 0xd6, 0x69, 0, 0, 0, 1, 0x80, 0xd6, 0x70, 0, 0, 0, 1), // id then pointer (a cycle-capable reference)
      bytes(0xc9, 0xff, 0xff, 0xff, 0xff, 0x70), // ext32 pointer with a 4 GiB body
      bytes(0xd6, 0x70, 0xff, 0xff, 0xff, 0xff),
    ];
    // Record definitions: keys include __proto__ and constructor; used often enough that msgpackr compiles a reader.
    for (const keys of [['__proto__', 'constructor'], ['t', 'id', '__proto__'], ['prototype', 'a b', '}', '"'], ['toString']]) {
      const def = bytes(0xd4, 0x72, 0x40, 0x90 | keys.length, ...keys.map((k) => bytes(0xa0 | Buffer.byteLength(k), Buffer.from(k))));
      const values = (i: number) => keys.map(() => bytes(0x81, 0xa8, Buffer.from('polluted'), i & 0x7f));
      const uses: Uint8Array[] = [];
      for (let i = 0; i < 20; i++) uses.push(bytes(0x40, ...values(i)));
      // [record, record, ...] where the first element defines the record and reads its first values.
      frames.push(bytes(0xdc, 0, 21, def, ...values(0), ...uses));
      // The same without the definition: 0x40 is then a plain fixint and the map is left dangling.
      frames.push(bytes(0xdc, 0, 20, ...uses));
    }
    // A record definition whose key list is not an array, or holds maps.
    frames.push(bytes(0xd4, 0x72, 0x40, 0xa3, Buffer.from('abc'), 0x01), bytes(0xd4, 0x72, 0x40, 0x91, 0x81, 0xa1, 0x61, 0x01, 0x01));
    // Error extension naming Object.prototype members: msgpackr calls errors[name](...).
    for (const name of ['constructor', '__proto__', 'hasOwnProperty', 'valueOf', '__defineGetter__', '__defineSetter__', '__lookupGetter__', 'toString']) {
      frames.push(bytes(0xd4, 0x65, 0x00, 0x93, 0xa0 | name.length, Buffer.from(name), 0xa1, 0x78, 0xc0));
      frames.push(HOLES.inputs(bytes(0xd4, 0x65, 0x00, 0x93, 0xa0 | name.length, Buffer.from(name), 0xa1, 0x78, 0xc0)));
    }
    for (const frame of frames) {
      for (const hole of ['root', 'inputs', 'id'] as Hole[]) checkFrame(HOLES[hole](frame));
    }
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.constantFrom(0x70, 0x69), fc.uint8Array({ maxLength: 12 }), (id, type, rest) => {
        checkFrame(bytes(0xd6, type, id, rest));
      }),
      { numRuns: 300 },
    );
  });

  it('invariant: an extension value where a map belongs is refused in < 100 ms whatever its size (1 MiB typed array as inputs)', () => {
    // TypeBox enumerates every own property of a record or object it checks: one string per element of a typed array.
    const big = 1 << 20;
    for (const hole of ['inputs', 'tensor'] as Hole[]) {
      for (const typeCode of [0, 1, 2, 8]) {
        // msgpackr typed-array extension (0x74): type code, then the elements' bytes.
        const ext = bytes(header('ext32', big + 1, 0x74), typeCode);
        const frame = new Uint8Array(HOLES[hole](ext).length + big);
        frame.set(HOLES[hole](ext));
        const p = checkFrame(frame);
        expect(p.parsed?.ok).toBe(false);
      }
    }
  });

  // Known and not fixed: msgpackr spends ~400 ms per MiB on a map of millions of short keys (3 s for an 8 MiB
  // frame, the default limit), before any schema check can look. Needs a structural pre-scan that caps
  // container sizes, or a much smaller frame limit. `fails` keeps the suite green until then, and turns red when fixed.
  it('invariant: a 2 MiB frame holding one map of 350 000 keys is refused in < 100 ms', () => {
    const keys = Math.floor(((2 << 20) - 5) / 6);
    const frame = Buffer.alloc(5 + keys * 6);
    frame[0] = 0xdf;
    frame.writeUInt32BE(keys, 1);
    for (let i = 0; i < keys; i++) {
      frame[5 + i * 6] = 0xa4;
      frame.write(i.toString(36).padStart(4, '0'), 6 + i * 6, 'latin1');
    }
    const p = probeOnce(HOLES.inputs(frame));
    expect(p.ms).toBeLessThan(CALL_MS);
  });

  it('invariant: input names the schema does not allow (line breaks, over 128 characters) never carry an unchecked value in', () => {
    const tensor = { dtype: 'float32', shape: [1, 4], data: new Uint8Array(16) };
    for (const name of ['a\nb', '\n', '\r', 'x\u2028', '\u2029', 'x'.repeat(129), 'x'.repeat(128), '']) {
      for (const value of [tensor, 5, { dtype: 'float32' }, null]) checkFrame(packPlain({ t: 'infer', id: 1, model: 'iris', inputs: own([[name, value]]) }));
    }
  });

  it('invariant: every prototype key name is refused or accepted exactly as the schema says, at the top level', () => {
    for (const key of PROTO_KEYS) {
      for (const t of ['infer', 'cancel', 'hello']) checkFrame(packPlain(own([['t', t], ['id', 1], [key, { polluted: 1 }]])));
      // As an input name, `constructor` is a legal record key: the schema accepts it, admission refuses it later.
      checkFrame(packPlain({ t: 'infer', id: 1, model: 'iris', inputs: own([[key, { dtype: 'float32', shape: [1, 4], data: new Uint8Array(16) }]]) }));
    }
  });
});
