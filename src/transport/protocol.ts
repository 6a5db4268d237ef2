/**
 * The client stream protocol (`ws://HOST:PORT/v1/stream`), as TypeScript
 * types, schemas and limits. docs/protocol.md is the prose form of this file;
 * field names and codes here are a contract with outside clients.
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { ErrorCode } from '../errors.js';

export const PROTOCOL_VERSION = 1;

/** Tensor element types and their byte widths (little-endian on the wire). */
export const DTYPE_BYTES = {
  float32: 4,
  float64: 8,
  int32: 4,
  int64: 8,
  uint8: 1,
  int8: 1,
} as const;
export type DType = keyof typeof DTYPE_BYTES;
export const isDType = (s: unknown): s is DType => typeof s === 'string' && Object.hasOwn(DTYPE_BYTES, s);

export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** Caps on untrusted input, checked before any work is done. */
export const LIMITS = {
  maxIdLength: 128,
  maxNameLength: 128,
  maxInputs: 16,
  maxRank: 8,
  maxDim: 1 << 24,
  maxDeadlineMs: 10 * 60_000,
} as const;

const Name = Type.String({ minLength: 1, maxLength: LIMITS.maxNameLength });
export const RequestId = Type.Union([
  Type.String({ minLength: 1, maxLength: LIMITS.maxIdLength }),
  Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }),
]);
export type RequestId = Static<typeof RequestId>;

export const WireTensor = Type.Object(
  {
    dtype: Type.String({ maxLength: 16 }),
    shape: Type.Array(Type.Integer({ minimum: 0, maximum: LIMITS.maxDim }), { maxItems: LIMITS.maxRank }),
    data: Type.Uint8Array(),
  },
  { additionalProperties: false },
);
export type WireTensor = { dtype: DType; shape: number[]; data: Uint8Array };

export const InferFrame = Type.Object(
  {
    t: Type.Literal('infer'),
    id: RequestId,
    model: Name,
    version: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
    // A key pattern, not maxLength (TypeBox ignores it on record keys), and no unmatched keys: with the
    // default pattern `^(.*)$` a name holding a line break skipped the tensor check altogether.
    inputs: Type.Record(Type.String({ pattern: `^[\\s\\S]{0,${LIMITS.maxNameLength}}$` }), WireTensor, {
      maxProperties: LIMITS.maxInputs,
      additionalProperties: false,
    }),
    priority: Type.Optional(Type.Union(PRIORITIES.map((p) => Type.Literal(p)))),
    deadlineMs: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: LIMITS.maxDeadlineMs })),
    key: Type.Optional(Type.String({ maxLength: LIMITS.maxIdLength })),
  },
  { additionalProperties: false },
);
export type InferFrame = Static<typeof InferFrame>;

export const CancelFrame = Type.Object({ t: Type.Literal('cancel'), id: RequestId }, { additionalProperties: false });
export type CancelFrame = Static<typeof CancelFrame>;

/** Authentication for clients that cannot set headers (browsers): the first frame. */
export const HelloFrame = Type.Object(
  { t: Type.Literal('hello'), token: Type.String({ minLength: 1, maxLength: 4096 }) },
  { additionalProperties: false },
);
export type HelloFrame = Static<typeof HelloFrame>;

export type ClientFrame = InferFrame | CancelFrame | HelloFrame;

export interface TensorSpec {
  name: string;
  dtype: DType;
  /** -1 marks a dynamic dimension; dimension 0 is the batch dimension. */
  shape: number[];
}

export interface ModelInfo {
  name: string;
  version: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  labels?: string[];
  maxBatch: number;
}

export interface WelcomeFrame {
  t: 'welcome';
  protocol: number;
  node: string;
  models: ModelInfo[];
  limits: { maxInFlight: number; maxFrameBytes: number };
}

export interface Timings {
  queueMs: number;
  inferMs: number;
  totalMs: number;
}

export interface ResultFrame {
  t: 'result';
  id: RequestId;
  model: string;
  version: string;
  outputs: Record<string, WireTensor>;
  node: string;
  worker: string;
  batchSize: number;
  timings: Timings;
}

export interface ErrorFrame {
  t: 'error';
  /** null when the frame was too broken to carry a usable id. */
  id: RequestId | null;
  code: ErrorCode;
  message: string;
  retryAfterMs?: number;
}

export type ServerFrame = WelcomeFrame | ResultFrame | ErrorFrame;

const compiled = <T extends TSchema>(schema: T): TypeCheck<T> => TypeCompiler.Compile(schema);
export const checkInfer = compiled(InferFrame);
export const checkCancel = compiled(CancelFrame);
export const checkHello = compiled(HelloFrame);
const checkId = compiled(RequestId);

export type ParsedFrame =
  | { ok: true; frame: ClientFrame }
  | { ok: false; id: RequestId | null; message: string };

/**
 * Checks a decoded frame against the schema. On failure it still recovers the
 * id when the id itself is valid, so the client can correlate the error.
 */
export function parseClientFrame(value: unknown): ParsedFrame {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, id: null, message: 'frame must be a msgpack map' };
  }
  const v = value as Record<string, unknown>;
  const id = checkId.Check(v['id']) ? (v['id'] as RequestId) : null;
  switch (v['t']) {
    case 'infer':
      // TypeBox lists every own property of a record it checks: a typed-array extension of a million
      // elements where the inputs map belongs cost seconds of event loop. Only plain maps go on.
      if (!isMap(v['inputs']) || !Object.values(v['inputs']).every(isMap)) {
        return { ok: false, id, message: '/inputs: Expected a map of tensor maps' };
      }
      if (checkInfer.Check(v)) return { ok: true, frame: v };
      return { ok: false, id, message: describe(checkInfer, v) };
    case 'cancel':
      if (checkCancel.Check(v)) return { ok: true, frame: v };
      return { ok: false, id, message: describe(checkCancel, v) };
    case 'hello':
      if (checkHello.Check(v)) return { ok: true, frame: v };
      return { ok: false, id, message: describe(checkHello, v) };
    default:
      // String() of a decoded map such as {toString: 1} throws: name only what is safe to name.
      return { ok: false, id, message: `unknown frame type ${JSON.stringify(v['t'] !== null && typeof v['t'] === 'object' ? 'object' : String(v['t']).slice(0, 32))}` };
  }
}

/** A decoded msgpack map: a plain object, not an extension decoded to a class instance. */
const isMap = (x: unknown): x is Record<string, unknown> => {
  if (typeof x !== 'object' || x === null) return false;
  const proto: unknown = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null; // null: maps built in-process without a prototype (HTTP API)
};

function describe(check: TypeCheck<TSchema>, value: unknown): string {
  const first = check.Errors(value).First();
  return first ? `${first.path || '/'}: ${first.message}` : 'frame does not match the schema';
}
