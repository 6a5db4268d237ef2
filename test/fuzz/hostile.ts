/**
 * Hostile input for the fuzz suite: fast-check arbitraries for client frames
 * (random bytes, msgpack values of every type, mutated valid frames,
 * prototype keys, huge declared lengths, deep nesting), an oracle for the
 * documented client schema written without TypeBox, and snapshots of the
 * built-in prototypes.
 */
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { DTYPE_BYTES, LIMITS, PRIORITIES } from '../../src/transport/protocol.js';

// ---------------------------------------------------------------------------
// Raw msgpack pieces.
// ---------------------------------------------------------------------------

export const bytes = (...parts: (number | ArrayLike<number>)[]): Uint8Array => {
  const flat: number[] = [];
  for (const p of parts) {
    if (typeof p === 'number') flat.push(p);
    else for (let i = 0; i < p.length; i++) flat.push(p[i]!);
  }
  return Uint8Array.from(flat);
};

const concat = (...parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

const be = (n: number, size: 1 | 2 | 4): number[] => {
  const out: number[] = [];
  for (let i = size - 1; i >= 0; i--) out.push(Math.floor(n / 2 ** (8 * i)) & 0xff);
  return out;
};

const str = (s: string) => {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 31) throw new RangeError('fixstr only');
  return bytes(0xa0 | b.length, b);
};

/** Headers whose count or length field is followed by that much data. */
export const HEADERS = {
  str8: { tag: 0xd9, size: 1 },
  str16: { tag: 0xda, size: 2 },
  str32: { tag: 0xdb, size: 4 },
  bin8: { tag: 0xc4, size: 1 },
  bin16: { tag: 0xc5, size: 2 },
  bin32: { tag: 0xc6, size: 4 },
  array16: { tag: 0xdc, size: 2 },
  array32: { tag: 0xdd, size: 4 },
  map16: { tag: 0xde, size: 2 },
  map32: { tag: 0xdf, size: 4 },
  ext8: { tag: 0xc7, size: 1 },
  ext16: { tag: 0xc8, size: 2 },
  ext32: { tag: 0xc9, size: 4 },
} as const;
export type HeaderKind = keyof typeof HEADERS;

/** A header declaring `count` items or bytes; ext headers take their type byte after the length. */
export const header = (kind: HeaderKind, count: number, extType = 0x70): Uint8Array => {
  const h = HEADERS[kind];
  return bytes(h.tag, be(count, h.size), kind.startsWith('ext') ? [extType & 0xff] : []);
};

export const maxCount = (kind: HeaderKind) => 2 ** (8 * HEADERS[kind].size) - 1;

const plainPackr = new Packr({ useRecords: false });
export const packPlain = (v: unknown): Uint8Array => new Uint8Array(plainPackr.pack(v));

/**
 * `obj` encoded with its last value replaced by `hole`: the hole's key must
 * come last and its value be `null`, so that the encoding ends with nil.
 */
export const withHole = (obj: Record<string, unknown>, hole: Uint8Array): Uint8Array => {
  const b = packPlain(obj);
  if (b[b.length - 1] !== 0xc0) throw new Error('the hole must be the last value');
  return concat(b.subarray(0, b.length - 1), hole);
};

/** Places where a hostile value goes inside an otherwise well-formed infer frame. */
export const HOLES = {
  root: (h: Uint8Array) => h,
  id: (h: Uint8Array) => withHole({ t: 'infer', model: 'iris', inputs: {}, id: null }, h),
  t: (h: Uint8Array) => withHole({ id: 1, model: 'iris', inputs: {}, t: null }, h),
  inputs: (h: Uint8Array) => withHole({ t: 'infer', id: 1, model: 'iris', inputs: null }, h),
  tensor: (h: Uint8Array) => withHole({ t: 'infer', id: 1, model: 'iris', inputs: { input: null } }, h),
  shape: (h: Uint8Array) => withHole({ t: 'infer', id: 1, model: 'iris', inputs: { input: { dtype: 'float32', data: new Uint8Array(16), shape: null } } }, h),
  data: (h: Uint8Array) => withHole({ t: 'infer', id: 1, model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: null } } }, h),
  key: (h: Uint8Array) => withHole({ t: 'infer', id: 1, model: 'iris', inputs: {}, key: null }, h),
} as const;
export type Hole = keyof typeof HOLES;

export type NestKind = 'array' | 'map' | 'protoMap' | 'set' | 'array32' | 'extWrapped' | 'mixed';

/** `depth` nested containers around a nil (or around nothing, when `truncated`). */
export function deepNesting(kind: NestKind, depth: number, truncated = false): Uint8Array {
  const unit: Record<Exclude<NestKind, 'mixed'>, Uint8Array> = {
    array: bytes(0x91),
    map: bytes(0x81, str('a')),
    protoMap: bytes(0x81, str('__proto__')),
    // msgpackr's Set extension (fixext 1, type 0x73) reads the array that follows it.
    set: bytes(0xd4, 0x73, 0x00, 0x91),
    array32: bytes(0xdd, 0, 0, 0, 1),
    // Error extension: reads [name, message, cause] after it; nest in the cause.
    extWrapped: bytes(0xd4, 0x65, 0x00, 0x93, str('Error'), str('m')),
  };
  const kinds = Object.keys(unit) as (keyof typeof unit)[];
  const parts: Uint8Array[] = [];
  for (let i = 0; i < depth; i++) parts.push(kind === 'mixed' ? unit[kinds[i % kinds.length]!] : unit[kind]);
  if (!truncated) parts.push(bytes(0xc0));
  return concat(...parts);
}

// ---------------------------------------------------------------------------
// Length fields of a msgpack encoding, for targeted corruption.
// ---------------------------------------------------------------------------

export interface LengthField {
  /** Offset of the length: of the header byte itself for fix types. */
  at: number;
  /** Bytes of the length field; 0 for a fix type, whose length is the header's low bits. */
  size: 0 | 1 | 2 | 4;
  /** For fix types, the mask of the length bits. */
  mask: number;
}

/** Every length or count field in a well-formed encoding (stops quietly at anything odd). */
export function lengthFields(b: Uint8Array): LengthField[] {
  const out: LengthField[] = [];
  let p = 0;
  const read = (size: 1 | 2 | 4, at: number) => {
    let n = 0;
    for (let i = 0; i < size; i++) n = n * 256 + b[at + i]!;
    return n;
  };
  const item = (depth: number): void => {
    if (p >= b.length || depth > 64 || out.length > 4096) throw new RangeError('stop');
    const t = b[p]!;
    if (t <= 0x7f || t >= 0xe0 || t === 0xc0 || t === 0xc2 || t === 0xc3 || t === 0xc1) {
      p++;
      return;
    }
    if (t <= 0x8f || (t >= 0x90 && t <= 0x9f)) {
      const isMap = t <= 0x8f;
      out.push({ at: p, size: 0, mask: 0x0f });
      const n = (t & 0x0f) * (isMap ? 2 : 1);
      p++;
      for (let i = 0; i < n; i++) item(depth + 1);
      return;
    }
    if (t >= 0xa0 && t <= 0xbf) {
      out.push({ at: p, size: 0, mask: 0x1f });
      p += 1 + (t & 0x1f);
      return;
    }
    const fixed: Record<number, number> = { 0xca: 5, 0xcb: 9, 0xcc: 2, 0xcd: 3, 0xce: 5, 0xcf: 9, 0xd0: 2, 0xd1: 3, 0xd2: 5, 0xd3: 9, 0xd4: 3, 0xd5: 4, 0xd6: 6, 0xd7: 10, 0xd8: 18 };
    if (fixed[t] !== undefined) {
      p += fixed[t]!;
      return;
    }
    const kind = (Object.keys(HEADERS) as HeaderKind[]).find((k) => HEADERS[k].tag === t);
    if (!kind) throw new RangeError('stop');
    const size = HEADERS[kind].size;
    out.push({ at: p + 1, size, mask: 0 });
    const n = read(size, p + 1);
    p += 1 + size;
    if (kind.startsWith('array') || kind.startsWith('map')) {
      const items = kind.startsWith('map') ? 2 * n : n;
      for (let i = 0; i < items; i++) item(depth + 1);
    } else {
      p += n + (kind.startsWith('ext') ? 1 : 0);
    }
  };
  try {
    while (p < b.length) item(0);
  } catch {
    // A truncated or odd encoding: the fields found so far are still useful.
  }
  return out;
}

// ---------------------------------------------------------------------------
// Mutations of a valid encoding.
// ---------------------------------------------------------------------------

export type Mutation =
  | { k: 'flip'; at: number; bit: number }
  | { k: 'truncate'; at: number }
  | { k: 'splice'; at: number; del: number; ins: Uint8Array }
  | { k: 'dup'; from: number; len: number; at: number }
  | { k: 'length'; field: number; to: 'max' | 'zero' | 'plus1' | 'minus1' | 'random'; r: number };

const frac = () => fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ k: fc.constant('flip' as const), at: frac(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ k: fc.constant('truncate' as const), at: frac() }),
  fc.record({ k: fc.constant('splice' as const), at: frac(), del: fc.integer({ min: 0, max: 8 }), ins: fc.uint8Array({ maxLength: 8 }) }),
  fc.record({ k: fc.constant('dup' as const), from: frac(), len: fc.integer({ min: 1, max: 32 }), at: frac() }),
  fc.record({
    k: fc.constant('length' as const),
    field: fc.nat(),
    to: fc.constantFrom('max' as const, 'zero' as const, 'plus1' as const, 'minus1' as const, 'random' as const),
    r: fc.nat(),
  }),
);

export function mutate(input: Uint8Array, ms: readonly Mutation[]): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input);
  for (const m of ms) {
    const pos = (f: number) => Math.min(b.length, Math.floor(f * (b.length + 1)));
    switch (m.k) {
      case 'flip':
        if (b.length > 0) b[Math.min(b.length - 1, Math.floor(m.at * b.length))]! ^= 1 << m.bit;
        break;
      case 'truncate':
        b = b.slice(0, pos(m.at));
        break;
      case 'splice': {
        const at = pos(m.at);
        b = concat(b.subarray(0, at), m.ins, b.subarray(Math.min(b.length, at + m.del)));
        break;
      }
      case 'dup': {
        const from = pos(m.from);
        const at = pos(m.at);
        b = concat(b.subarray(0, at), b.slice(from, from + m.len), b.subarray(at));
        break;
      }
      case 'length': {
        const fields = lengthFields(b);
        if (fields.length === 0) break;
        const f = fields[m.field % fields.length]!;
        if (f.at + Math.max(1, f.size) > b.length) break;
        if (f.size === 0) {
          const cur = b[f.at]! & f.mask;
          const v = { max: f.mask, zero: 0, plus1: cur + 1, minus1: cur - 1, random: m.r }[m.to] & f.mask;
          b[f.at] = (b[f.at]! & ~f.mask & 0xff) | v;
        } else {
          const max = 2 ** (8 * f.size) - 1;
          let cur = 0;
          for (let i = 0; i < f.size; i++) cur = cur * 256 + b[f.at + i]!;
          const v = { max, zero: 0, plus1: Math.min(max, cur + 1), minus1: Math.max(0, cur - 1), random: m.r % (max + 1) }[m.to];
          b.set(be(v, f.size), f.at);
        }
        break;
      }
    }
  }
  return b;
}

// ---------------------------------------------------------------------------
// Frames.
// ---------------------------------------------------------------------------

const DTYPES = Object.keys(DTYPE_BYTES) as (keyof typeof DTYPE_BYTES)[];

export const requestIdArb = fc.oneof(
  // 'binary' units are code points: 64 of them are at most 128 UTF-16 units.
  fc.string({ minLength: 1, maxLength: LIMITS.maxIdLength / 2, unit: 'binary' }),
  fc.string({ minLength: LIMITS.maxIdLength, maxLength: LIMITS.maxIdLength }),
  fc.string({ minLength: 1, maxLength: 12 }),
  fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  fc.nat({ max: 1000 }),
);

const tensorArb = fc.record({
  dtype: fc.constantFrom(...DTYPES),
  shape: fc.array(fc.oneof(fc.nat({ max: 8 }), fc.integer({ min: 0, max: LIMITS.maxDim })), { maxLength: LIMITS.maxRank }),
  data: fc.uint8Array({ maxLength: 48 }),
});

/** An iris row that the node will actually run. */
export const irisTensorArb = fc
  .tuple(fc.integer({ min: 1, max: 4 }), fc.float({ noNaN: true, min: -10, max: 10 }))
  .map(([rows, x]) => ({ dtype: 'float32', shape: [rows, 4], data: new Uint8Array(Float32Array.from({ length: rows * 4 }, (_, i) => x + i).buffer) }));

const inputsArb = fc.oneof(
  fc.record({ input: irisTensorArb }),
  fc.dictionary(fc.string({ maxLength: LIMITS.maxNameLength / 2, unit: 'binary' }), tensorArb, { maxKeys: LIMITS.maxInputs, noNullPrototype: true }),
);

/** Frames the documented schema accepts. */
export const inferFrameArb = fc.record(
  {
    t: fc.constant('infer'),
    id: requestIdArb,
    model: fc.oneof(fc.constant('iris'), fc.string({ minLength: 1, maxLength: LIMITS.maxNameLength / 2, unit: 'binary' })),
    version: fc.oneof(fc.constant('1'), fc.string({ minLength: 1, maxLength: 32 })),
    inputs: inputsArb,
    priority: fc.constantFrom(...PRIORITIES),
    deadlineMs: fc.oneof(fc.integer({ min: 1, max: LIMITS.maxDeadlineMs }), fc.double({ min: 1e-6, max: LIMITS.maxDeadlineMs, noNaN: true })),
    key: fc.string({ maxLength: LIMITS.maxIdLength }),
  },
  { requiredKeys: ['t', 'id', 'model', 'inputs'], noNullPrototype: true },
);

export const cancelFrameArb = fc.record({ t: fc.constant('cancel'), id: requestIdArb }, { noNullPrototype: true });
export const helloFrameArb = fc.record({ t: fc.constant('hello'), token: fc.string({ minLength: 1, maxLength: 64 }) }, { noNullPrototype: true });
export const validFrameArb = fc.oneof(
  { weight: 6, arbitrary: inferFrameArb },
  { weight: 2, arbitrary: cancelFrameArb },
  { weight: 1, arbitrary: helloFrameArb },
);

// ---------------------------------------------------------------------------
// Msgpack values of every type, through encoders with every option.
// ---------------------------------------------------------------------------

/** An object with an own enumerable property of any name, `__proto__` included. */
export const own = (entries: readonly (readonly [string, unknown])[]): Record<string, unknown> => {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
};

export const PROTO_KEYS = ['__proto__', 'constructor', 'prototype'] as const;

const keyArb = fc.oneof(
  fc.constantFrom('t', 'id', 'token', 'model', 'inputs', 'input', 'dtype', 'shape', 'data', 'version', 'key', 'priority', 'deadlineMs', ...PROTO_KEYS, 'toString', 'valueOf', 'hasOwnProperty', 'length', 'then', 'a\nb', '\u2028', 'x'.repeat(129)),
  fc.string({ maxLength: 12 }),
  fc.string({ maxLength: 4, unit: 'binary' }),
);

const leafArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.string({ maxLength: 24, unit: 'binary' }),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 64n - 1n }),
  fc.bigInt({ min: -(2n ** 200n), max: 2n ** 200n }),
  fc.date({ noInvalidDate: false }),
  fc.uint8Array({ maxLength: 16 }),
  fc.int8Array({ maxLength: 8 }),
  fc.int32Array({ maxLength: 8 }),
  fc.float32Array({ maxLength: 8 }),
  fc.float64Array({ maxLength: 4 }),
  fc.bigInt64Array({ maxLength: 4 }),
  fc.string({ maxLength: 16 }).map((m) => new Error(m)),
  fc.constantFrom(/a+/g, /(a*)*b/, /[\s\S]/u),
  fc.constantFrom('t', 'infer', 'cancel', 'hello', 'iris', 'float32', ...PROTO_KEYS, NaN, Infinity, -Infinity, -0, 2 ** 53, 2 ** 64, Number.MAX_SAFE_INTEGER + 2, -1),
);

export const valueArb: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: 'small', maxDepth: 4 }, leafArb, tie('arr'), tie('obj'), tie('map'), tie('set'), tie('shared'), tie('frameish')),
  arr: fc.array(tie('v'), { maxLength: 5 }),
  obj: fc.array(fc.tuple(keyArb, tie('v')), { maxLength: 5 }).map(own),
  map: fc.array(fc.tuple(tie('v'), tie('v')), { maxLength: 3 }).map((e) => new Map(e)),
  set: fc.array(tie('v'), { maxLength: 3 }).map((e) => new Set(e)),
  // The same object twice: structured-clone encoders write an id and a pointer (0x69/0x70).
  shared: tie('v').map((x) => [x, x, { again: x }]),
  // Close to a frame, so the schema check is exercised past its first test.
  frameish: fc
    .tuple(fc.constantFrom('infer', 'cancel', 'hello'), fc.array(fc.tuple(keyArb, tie('v')), { maxLength: 6 }), fc.boolean())
    .map(([t, rest, withModel]) => own([['t', t], ['id', 1], ...(withModel ? [['model', 'iris'] as const] : []), ...rest])),
})).v;

/** Encoders with every option that changes what goes on the wire. */
export const PACKERS = [
  new Packr({ useRecords: false }),
  new Packr({ useRecords: false, moreTypes: true, structuredClone: true }),
  new Packr({ useRecords: true }),
  new Packr({ useRecords: true, moreTypes: true, structuredClone: true }),
  new Packr({ useRecords: false, bundleStrings: true }),
  new Packr({ useRecords: false, useBigIntExtension: true, useTimestamp32: true, variableMapSize: true }),
  new Packr({ useRecords: false, largeBigIntToString: true, moreTypes: true }),
];

/** A value packed by one of the encoders; values an encoder refuses (cycles, huge big ints) are skipped. */
export const packedValueArb: fc.Arbitrary<Uint8Array> = fc
  .tuple(valueArb, fc.nat({ max: PACKERS.length - 1 }))
  .map(([v, i]): Uint8Array | undefined => {
    try {
      return new Uint8Array(PACKERS[i]!.pack(v));
    } catch {
      return undefined;
    }
  })
  .filter((b): b is Uint8Array => b !== undefined);

/** A valid frame with a prototype key added at some level, possibly nested several times. */
export const protoKeyFrameArb: fc.Arbitrary<Uint8Array> = fc
  .record({
    frame: inferFrameArb,
    key: fc.constantFrom(...PROTO_KEYS),
    level: fc.constantFrom('root', 'inputs', 'tensor', 'nested'),
    depth: fc.integer({ min: 1, max: 12 }),
    payload: fc.constantFrom<unknown>(
      { polluted: 'yes' },
      { toString: 1, valueOf: 2 },
      { t: 'infer', id: 1 },
      [{ polluted: 'array' }],
      'string',
      7,
      null,
    ),
  })
  .map(({ frame, key, level, depth, payload }) => {
    let value: unknown = payload;
    for (let i = 0; i < depth; i++) value = own([[key, value], ['polluted', `level ${i}`]]);
    const f = own(Object.entries(frame));
    const inputs = own(Object.entries(frame.inputs as Record<string, unknown>));
    f['inputs'] = inputs;
    const firstTensor = Object.keys(inputs)[0];
    if (level === 'root' || (level === 'tensor' && firstTensor === undefined)) Object.defineProperty(f, key, { value, enumerable: true });
    else if (level === 'inputs') Object.defineProperty(inputs, key, { value, enumerable: true });
    else if (level === 'tensor') inputs[firstTensor!] = own([...Object.entries(inputs[firstTensor!] as object), [key, value]]);
    else f['inputs'] = own([[key, own([[key, value]])]]);
    return packPlain(f);
  });

// ---------------------------------------------------------------------------
// The documented schema (docs/protocol.md), written without TypeBox.
// ---------------------------------------------------------------------------

/** A decoded msgpack map: a plain object, not an extension type decoded to a class. */
export const isPlainMap = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && Object.getPrototypeOf(x) === Object.prototype;

const isStr = (x: unknown, min: number, max: number) => typeof x === 'string' && x.length >= min && x.length <= max;
export const isRequestId = (x: unknown) =>
  isStr(x, 1, LIMITS.maxIdLength) || (typeof x === 'number' && Number.isInteger(x) && x >= 0 && x <= Number.MAX_SAFE_INTEGER);

const onlyKeys = (o: object, allowed: readonly string[]) => Object.getOwnPropertyNames(o).every((k) => allowed.includes(k));
/** Optional fields may be absent or (msgpack extension 0) undefined. */
const opt = (o: Record<string, unknown>, k: string, ok: (x: unknown) => boolean) => o[k] === undefined || ok(o[k]);

const isTensor = (x: unknown) =>
  isPlainMap(x) &&
  onlyKeys(x, ['dtype', 'shape', 'data']) &&
  isStr(x['dtype'], 0, 16) &&
  Array.isArray(x['shape']) &&
  x['shape'].length <= LIMITS.maxRank &&
  x['shape'].every((d) => Number.isInteger(d) && d >= 0 && d <= LIMITS.maxDim) &&
  x['data'] instanceof Uint8Array;

/** True when `v` is a frame the protocol documents: plain maps only, every field in range, nothing else. */
export function documentedSchema(v: unknown): boolean {
  if (!isPlainMap(v)) return false;
  if (v['t'] === 'cancel') return onlyKeys(v, ['t', 'id']) && isRequestId(v['id']);
  if (v['t'] === 'hello') return onlyKeys(v, ['t', 'token']) && isStr(v['token'], 1, 4096);
  if (v['t'] !== 'infer') return false;
  const inputs = v['inputs'];
  return (
    onlyKeys(v, ['t', 'id', 'model', 'version', 'inputs', 'priority', 'deadlineMs', 'key']) &&
    isRequestId(v['id']) &&
    isStr(v['model'], 1, LIMITS.maxNameLength) &&
    opt(v, 'version', (x) => isStr(x, 1, 32)) &&
    isPlainMap(inputs) &&
    Object.getOwnPropertyNames(inputs).length <= LIMITS.maxInputs &&
    Object.entries(inputs).every(([k, t]) => k.length <= LIMITS.maxNameLength && isTensor(t)) &&
    opt(v, 'priority', (x) => (PRIORITIES as readonly unknown[]).includes(x)) &&
    opt(v, 'deadlineMs', (x) => typeof x === 'number' && Number.isFinite(x) && x > 0 && x <= LIMITS.maxDeadlineMs) &&
    opt(v, 'key', (x) => isStr(x, 0, LIMITS.maxIdLength))
  );
}

// ---------------------------------------------------------------------------
// Prototypes.
// ---------------------------------------------------------------------------

const BUILTINS: Record<string, object> = {
  Object: Object.prototype,
  Array: Array.prototype,
  Function: Function.prototype,
  String: String.prototype,
  Number: Number.prototype,
  Boolean: Boolean.prototype,
  BigInt: BigInt.prototype,
  Symbol: Symbol.prototype,
  Error: Error.prototype,
  TypeError: TypeError.prototype,
  RangeError: RangeError.prototype,
  RegExp: RegExp.prototype,
  Date: Date.prototype,
  Map: Map.prototype,
  Set: Set.prototype,
  Promise: Promise.prototype,
  ArrayBuffer: ArrayBuffer.prototype,
  DataView: DataView.prototype,
  TypedArray: Object.getPrototypeOf(Uint8Array.prototype) as object,
  Uint8Array: Uint8Array.prototype,
  Float32Array: Float32Array.prototype,
  Buffer: Buffer.prototype,
};

/** Own keys of every built-in prototype with the identity of each property's value or accessors. */
export type ProtoSnapshot = Record<string, Record<string, unknown[]>>;

export function snapshotPrototypes(): ProtoSnapshot {
  const snap: ProtoSnapshot = {};
  for (const [name, proto] of Object.entries(BUILTINS)) {
    const props: Record<string, unknown[]> = {};
    for (const key of Reflect.ownKeys(proto)) {
      const d = Object.getOwnPropertyDescriptor(proto, key)!;
      props[String(key)] = [d.value, d.get, d.set, Object.getPrototypeOf(proto)];
    }
    snap[name] = props;
  }
  return snap;
}

/** The names of what changed between two snapshots; empty when nothing did. */
export function prototypeChanges(before: ProtoSnapshot, after: ProtoSnapshot): string[] {
  const changes: string[] = [];
  for (const name of Object.keys(before)) {
    const a = before[name]!;
    const b = after[name]!;
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const x = a[k];
      const y = b[k];
      if (!x || !y || x.some((v, i) => !Object.is(v, y[i]))) changes.push(`${name}.prototype.${k}`);
    }
  }
  // Anything enumerable on Object.prototype shows up in every for-in.
  for (const k in {}) changes.push(`enumerable ${k} on Object.prototype`);
  return changes;
}

const builtinProtos = new Set<object | null>([null, ...Object.values(BUILTINS)]);
for (const C of [Int8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float64Array, BigInt64Array, BigUint64Array, EvalError, ReferenceError, SyntaxError, URIError, AggregateError]) {
  builtinProtos.add(C.prototype);
}

/**
 * The first object in a decoded value whose prototype is not a built-in one
 * (a decoded map turned into a prototype), or undefined. `allow` adds
 * library classes (msgpackr's C1Type).
 */
export function foreignPrototype(value: unknown, allow: ReadonlySet<object> = new Set()): string | undefined {
  const seen = new Set<object>();
  const stack: { v: unknown; path: string }[] = [{ v: value, path: '$' }];
  while (stack.length > 0 && seen.size < 100_000) {
    const { v, path } = stack.pop()!;
    if (typeof v !== 'object' || v === null || seen.has(v)) continue;
    seen.add(v);
    const proto = Object.getPrototypeOf(v) as object | null;
    if (!builtinProtos.has(proto) && !(proto && allow.has(proto))) return path;
    if (ArrayBuffer.isView(v)) continue;
    if (v instanceof Map) for (const [k, x] of v) stack.push({ v: k, path: `${path}<key>` }, { v: x, path: `${path}<value>` });
    else if (v instanceof Set) for (const x of v) stack.push({ v: x, path: `${path}<item>` });
    else for (const k of Object.keys(v)) stack.push({ v: (v as Record<string, unknown>)[k], path: `${path}.${k}` });
  }
  return undefined;
}
