/**
 * The Open Inference Protocol (KServe v2) REST API on the node's port.
 *
 *   GET  /v2                                          server metadata
 *   GET  /v2/models/{m}[/versions/{v}]                model metadata
 *   GET  /v2/models/{m}[/versions/{v}]/ready          200 ready, 503 not yet
 *   POST /v2/models/{m}[/versions/{v}]/infer          inference (JSON tensors)
 *
 * `GET /v2/health/live` and `/v2/health/ready` are answered by Server.ts;
 * other methods on them get 405 here.
 *
 * An infer request becomes the same `infer` frame a WebSocket client sends
 * and goes through `ctx.submit`: the same admission checks, router, batchers,
 * ledger and request metrics. Errors are `{"error": message}` with the status
 * of `STATUS`; `overloaded` adds `Retry-After`.
 *
 * actorserve extensions: request `parameters.priority` ("high" | "normal" |
 * "low"), `parameters.deadline_ms` and `parameters.key` (routing key);
 * response `parameters.node`, `worker`, `batch_size`, `queue_ms`, `infer_ms`.
 *
 * Limits: a body over `ctx.maxBodyBytes` is refused with 413 from its
 * `content-length` before it is read, or as soon as a chunked body grows past
 * it; every other cap is the WebSocket protocol's (`LIMITS`), checked by the
 * same schema.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { ActorserveError, invalidRequest, type ErrorCode } from '../../errors.js';
import { projectRoot, type ModelSpec } from '../../models/registry.js';
import {
  DTYPE_BYTES,
  LIMITS,
  PRIORITIES,
  parseClientFrame,
  type DType,
  type InferFrame,
  type Priority,
  type ResultFrame,
  type TensorSpec,
  type WireTensor,
} from '../protocol.js';
import { json } from '../Server.js';
import { BodyTooLarge, declaredLength, readBody } from './body.js';
import type { NodeContext } from './context.js';

/** HTTP status for each error code; a `Record` so a new code fails to compile until it is mapped. */
export const STATUS: Readonly<Record<ErrorCode, number>> = {
  invalid_request: 400,
  unauthorized: 401,
  model_not_found: 404,
  overloaded: 429,
  cancelled: 499,
  internal: 500,
  unavailable: 503,
  deadline_exceeded: 504,
};

/** OIP datatype names of the tensor types actorserve carries; others (BOOL, BYTES, FP16, …) are refused. */
const DATATYPE: Readonly<Record<DType, string>> = {
  float32: 'FP32',
  float64: 'FP64',
  int32: 'INT32',
  int64: 'INT64',
  uint8: 'UINT8',
  int8: 'INT8',
};
const DTYPE_OF: ReadonlyMap<string, DType> = new Map(Object.entries(DATATYPE).map(([d, o]) => [o, d as DType]));

const SERVER_METADATA = {
  name: 'actorserve',
  version: String((JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version?: unknown }).version),
  extensions: [] as string[],
};

type Route =
  | { t: 'server' }
  | { t: 'health' }
  | { t: 'model'; model: string; version: string | undefined }
  | { t: 'ready'; model: string; version: string | undefined }
  | { t: 'infer'; model: string; version: string | undefined };

/** Error bodies carry the message only (the OIP form); the status says the kind. */
interface Failure {
  code: ErrorCode;
  message: string;
  retryAfterMs?: number | undefined;
}

/**
 * Answers the OIP routes; returns false for any other path (the server then
 * answers 404). Never throws: an unexpected error becomes a 500.
 */
export function handleOip(req: IncomingMessage, res: ServerResponse, path: string, ctx: NodeContext): boolean {
  if (path !== '/v2' && !path.startsWith('/v2/')) return false;
  try {
    let route: Route | undefined;
    try {
      route = matchRoute(path);
    } catch (e) {
      if (!(e instanceof URIError)) throw e;
      fail(res, invalidRequest(`malformed percent-escape in ${JSON.stringify(path.slice(0, 256))}`));
      return true;
    }
    if (!route) return false;
    const allow = route.t === 'infer' ? 'POST' : 'GET';
    if (req.method !== allow) {
      // The health routes' GET is answered by Server.ts; it never gets here.
      res.setHeader('allow', allow);
      json(res, 405, { error: `method ${req.method ?? ''} is not allowed on ${path.slice(0, 256)}; use ${allow}` });
      return true;
    }
    switch (route.t) {
      case 'server':
        json(res, 200, SERVER_METADATA);
        return true;
      case 'health':
        return false;
      case 'model': {
        const spec = findModel(res, ctx, route.model, route.version);
        if (spec) json(res, 200, modelMetadata(spec));
        return true;
      }
      case 'ready': {
        const spec = findModel(res, ctx, route.model, route.version);
        if (!spec) return true;
        const ready = ctx.modelReady(spec.name);
        json(res, ready ? 200 : 503, { name: spec.name, ready });
        return true;
      }
      case 'infer': {
        const spec = findModel(res, ctx, route.model, route.version);
        if (spec) startInfer(req, res, spec, route.version, ctx);
        return true;
      }
    }
  } catch {
    internalError(res);
    return true;
  }
}

/**
 * Parses a `/v2/...` path into a route, or undefined when it is none of ours.
 * @throws URIError for a malformed percent-escape in a model name or version.
 */
function matchRoute(path: string): Route | undefined {
  const s = path.split('/'); // ['', 'v2', ...]
  if (s.length === 2) return { t: 'server' };
  if (s.length === 4 && s[2] === 'health' && (s[3] === 'live' || s[3] === 'ready')) return { t: 'health' };
  if (s[2] !== 'models' || s.length < 4 || s[3] === '') return undefined;
  let rest = s.slice(4);
  let version: string | undefined;
  if (rest[0] === 'versions') {
    if (rest.length < 2 || rest[1] === '') return undefined;
    version = decodeURIComponent(rest[1]!);
    rest = rest.slice(2);
  }
  const model = decodeURIComponent(s[3]!);
  if (rest.length === 0) return { t: 'model', model, version };
  if (rest.length === 1 && rest[0] === 'ready') return { t: 'ready', model, version };
  if (rest.length === 1 && rest[0] === 'infer') return { t: 'infer', model, version };
  return undefined;
}

/** The served model, or undefined after answering 404 for an unknown model or version. */
function findModel(res: ServerResponse, ctx: NodeContext, model: string, version: string | undefined): ModelSpec | undefined {
  const spec = ctx.models.find((m) => m.name === model);
  if (!spec) {
    fail(res, { code: 'model_not_found', message: `model ${JSON.stringify(model.slice(0, LIMITS.maxNameLength))} is not served` });
    return undefined;
  }
  if (version !== undefined && version !== spec.version) {
    fail(res, { code: 'model_not_found', message: `model ${spec.name} has no version ${JSON.stringify(version.slice(0, 32))} (serving ${spec.version})` });
    return undefined;
  }
  return spec;
}

const tensorMetadata = (t: TensorSpec) => ({ name: t.name, datatype: DATATYPE[t.dtype], shape: t.shape });

const modelMetadata = (spec: ModelSpec) => ({
  name: spec.name,
  versions: [spec.version],
  platform: 'onnxruntime',
  inputs: spec.inputs.map(tensorMetadata),
  outputs: spec.outputs.map(tensorMetadata),
});

/** Header checks that need no body (415, 413), then reads the body and runs the request. */
function startInfer(req: IncomingMessage, res: ServerResponse, spec: ModelSpec, version: string | undefined, ctx: NodeContext): void {
  const unsupported = unsupportedEncoding(req);
  if (unsupported) {
    json(res, 415, { error: unsupported });
    return;
  }
  const limit = ctx.maxBodyBytes;
  const declared = declaredLength(req);
  if (declared !== undefined && declared > limit) return tooLarge(res, limit);
  readBody(req, limit, ctx.bodiesReading)
    .then(
      (body) => infer(req, res, body, spec, version, ctx),
      (e: unknown) => {
        if (e instanceof BodyTooLarge) return tooLarge(res, limit);
        // Otherwise the client went away mid-body: there is nobody to answer.
      },
    )
    .catch(() => internalError(res));
}

/** Why the body's content type or encoding is refused (415), or undefined when it is JSON. */
function unsupportedEncoding(req: IncomingMessage): string | undefined {
  const type = req.headers['content-type'];
  if (type !== undefined) {
    const [media, ...params] = type.split(';').map((p) => p.trim().toLowerCase());
    if (media !== 'application/json') return `content-type must be application/json, got ${JSON.stringify(type.slice(0, 128))}`;
    for (const p of params) {
      if (p.startsWith('charset=') && !['utf-8', 'utf8', '"utf-8"'].includes(p.slice(8))) {
        return `JSON bodies must be UTF-8, got ${JSON.stringify(p.slice(0, 128))}`;
      }
    }
  }
  const encoding = req.headers['content-encoding'];
  if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
    return `content-encoding ${JSON.stringify(encoding.slice(0, 64))} is not supported`;
  }
  return undefined;
}

/** 413 and close: the rest of the body is never read, so the connection cannot be reused. */
function tooLarge(res: ServerResponse, limit: number): void {
  if (res.headersSent) return;
  res.setHeader('connection', 'close');
  json(res, 413, { error: `request body exceeds ${limit} bytes` });
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

async function infer(req: IncomingMessage, res: ServerResponse, body: Buffer, spec: ModelSpec, version: string | undefined, ctx: NodeContext): Promise<void> {
  let value: unknown;
  try {
    value = JSON.parse(utf8.decode(body));
  } catch (e) {
    return fail(res, invalidRequest(`body is not valid UTF-8 JSON: ${(e as Error).message}`));
  }
  let request: ParsedInfer;
  try {
    request = parseInfer(value, spec, version, body.byteLength);
  } catch (e) {
    if (!ActorserveError.is(e)) throw e;
    return fail(res, e);
  }
  const gone = new AbortController();
  res.once('close', () => void (res.writableFinished || gone.abort()));
  const reply = await ctx.submit(request.frame, { address: ctx.clientAddress ? ctx.clientAddress(req) : req.socket.remoteAddress, gone: gone.signal });
  if (gone.signal.aborted) return; // nobody to answer: the request was cancelled, or ran for nobody
  if (reply.t === 'error') return fail(res, reply);
  json(res, 200, inferResponse(reply, request));
}

interface ParsedInfer {
  frame: InferFrame;
  /** The client's id, echoed verbatim (the frame carries it too, or a generated one). */
  id: string;
  /** Output names the client asked for, in its order; undefined for all. */
  outputs: string[] | undefined;
}

/**
 * Turns an OIP infer request body into an `infer` frame for `spec`.
 * `bodyBytes` bounds the element count (each element takes at least a byte of
 * JSON), so no tensor is allocated larger than the body that described it.
 * @throws ActorserveError `invalid_request` naming the first problem found.
 */
function parseInfer(value: unknown, spec: ModelSpec, version: string | undefined, bodyBytes: number): ParsedInfer {
  const body = object(value, 'body');
  const id = body['id'] === undefined ? randomUUID() : boundedString(body['id'], 'id', 1, LIMITS.maxIdLength);

  const params = body['parameters'] === undefined ? {} : object(body['parameters'], 'parameters');
  let priority: Priority | undefined;
  if (params['priority'] !== undefined) {
    const p = params['priority'];
    if (!PRIORITIES.includes(p as Priority)) throw invalidRequest(`parameters.priority must be one of ${PRIORITIES.join(', ')}`);
    priority = p as Priority;
  }
  const deadlineMs = params['deadline_ms'];
  if (deadlineMs !== undefined && !(typeof deadlineMs === 'number' && deadlineMs > 0 && deadlineMs <= LIMITS.maxDeadlineMs)) {
    throw invalidRequest(`parameters.deadline_ms must be a number in (0, ${LIMITS.maxDeadlineMs}]`);
  }
  const key = params['key'] === undefined ? undefined : boundedString(params['key'], 'parameters.key', 0, LIMITS.maxIdLength);

  const list = body['inputs'];
  if (!Array.isArray(list) || list.length === 0 || list.length > LIMITS.maxInputs) {
    throw invalidRequest(`inputs must be an array of 1 to ${LIMITS.maxInputs} tensors`);
  }
  // No prototype: an input named "__proto__" is just a wrong name.
  const inputs: Record<string, WireTensor> = Object.create(null) as Record<string, WireTensor>;
  for (let i = 0; i < list.length; i++) {
    const t = object(list[i], `inputs[${i}]`);
    const name = boundedString(t['name'], `inputs[${i}].name`, 1, LIMITS.maxNameLength);
    if (Object.hasOwn(inputs, name)) throw invalidRequest(`input "${name}" is given twice`);
    inputs[name] = tensor(t, name, bodyBytes);
  }

  let outputs: string[] | undefined;
  if (body['outputs'] !== undefined) {
    if (!Array.isArray(body['outputs'])) throw invalidRequest('outputs must be an array');
    outputs = [];
    for (const [i, o] of body['outputs'].entries()) {
      const name = boundedString(object(o, `outputs[${i}]`)['name'], `outputs[${i}].name`, 1, LIMITS.maxNameLength);
      if (!spec.outputs.some((s) => s.name === name)) {
        throw invalidRequest(`model ${spec.name} has no output "${name}" (outputs: ${spec.outputs.map((s) => s.name).join(', ')})`);
      }
      if (!outputs.includes(name)) outputs.push(name);
    }
  }

  const frame: InferFrame = {
    t: 'infer',
    id,
    model: spec.name,
    ...(version !== undefined ? { version } : {}),
    inputs,
    ...(priority !== undefined ? { priority } : {}),
    ...(deadlineMs !== undefined ? { deadlineMs } : {}),
    ...(key !== undefined ? { key } : {}),
  };
  // The WebSocket schema is the contract for every entry point: nothing gets
  // past it here that a WebSocket client could not send.
  const checked = parseClientFrame(frame);
  if (!checked.ok) throw invalidRequest(checked.message);
  return { frame, id, outputs };
}

/** One input tensor: datatype, shape, and `data` (flat or nested, row-major) as little-endian bytes. */
function tensor(t: Record<string, unknown>, name: string, bodyBytes: number): WireTensor {
  const datatype = t['datatype'];
  const dtype = typeof datatype === 'string' ? DTYPE_OF.get(datatype) : undefined;
  if (!dtype) {
    throw invalidRequest(`input "${name}": datatype must be one of ${[...DTYPE_OF.keys()].join(', ')}, got ${JSON.stringify(datatype)?.slice(0, 32)}`);
  }
  const shape = t['shape'];
  if (!Array.isArray(shape) || shape.length > LIMITS.maxRank) {
    throw invalidRequest(`input "${name}": shape must be an array of at most ${LIMITS.maxRank} dimensions`);
  }
  let elements = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0 || d > LIMITS.maxDim) {
      throw invalidRequest(`input "${name}": shape dimensions must be integers in [0, ${LIMITS.maxDim}], got ${JSON.stringify(d)}`);
    }
    elements *= d as number;
  }
  const data = t['data'];
  if (!Array.isArray(data)) throw invalidRequest(`input "${name}": data must be an array of numbers`);
  // More elements than the body has bytes cannot match: count them without allocating.
  const out = elements <= bodyBytes ? ELEMENTS[dtype](elements) : undefined;
  const seen = flatten(data, shape.length, out, name, DATATYPE[dtype]);
  if (seen !== elements) {
    throw invalidRequest(`input "${name}": data has ${seen} elements, shape [${shape.join(',')}] needs ${elements}`);
  }
  return { dtype, shape: shape as number[], data: out!.bytes };
}

/** A typed array under construction: `put` stores one element, false when it is not a value of the type. */
interface Writer {
  /** The typed array's own bytes (little-endian on every platform onnxruntime-node ships for). */
  bytes: Uint8Array;
  length: number;
  put(i: number, v: unknown): boolean;
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

const ints = (make: (n: number) => Int32Array | Uint8Array | Int8Array, min: number, max: number) => (n: number): Writer => {
  const a = make(n);
  return {
    bytes: bytesOf(a),
    length: n,
    put: (i, v) => {
      if (!Number.isInteger(v) || (v as number) < min || (v as number) > max) return false;
      a[i] = v as number;
      return true;
    },
  };
};

/** Writers by dtype; float32 is checked after the store, since a finite double can overflow to Infinity. */
const ELEMENTS: Readonly<Record<DType, (n: number) => Writer>> = {
  float32: (n) => {
    const a = new Float32Array(n);
    return {
      bytes: bytesOf(a),
      length: n,
      put: (i, v) => {
        if (typeof v !== 'number') return false;
        a[i] = v;
        return Number.isFinite(a[i]);
      },
    };
  },
  float64: (n) => {
    const a = new Float64Array(n);
    return {
      bytes: bytesOf(a),
      length: n,
      put: (i, v) => {
        if (typeof v !== 'number' || !Number.isFinite(v)) return false;
        a[i] = v;
        return true;
      },
    };
  },
  int32: ints((n) => new Int32Array(n), -(2 ** 31), 2 ** 31 - 1),
  uint8: ints((n) => new Uint8Array(n), 0, 255),
  int8: ints((n) => new Int8Array(n), -128, 127),
  int64: (n) => {
    const a = new BigInt64Array(n);
    return {
      bytes: bytesOf(a),
      length: n,
      put: (i, v) => {
        // JSON numbers past 2^53 have already lost their low bits.
        if (!Number.isSafeInteger(v)) return false;
        a[i] = BigInt(v as number);
        return true;
      },
    };
  },
};

/**
 * Writes `data`, flat or nested up to `rank` levels, into `out` in row-major
 * order and returns how many elements it holds; elements past `out`'s end
 * are only counted. Recursion is bounded by `rank` (at most LIMITS.maxRank).
 * @throws ActorserveError `invalid_request` for a non-element or nesting deeper than the rank.
 */
function flatten(data: readonly unknown[], rank: number, out: Writer | undefined, name: string, datatype: string): number {
  const capacity = out ? out.length : 0;
  let n = 0;
  const walk = (a: readonly unknown[], depth: number): void => {
    for (const v of a) {
      if (Array.isArray(v)) {
        if (depth >= rank) throw invalidRequest(`input "${name}": data is nested deeper than the shape's ${rank} dimensions`);
        walk(v, depth + 1);
        continue;
      }
      if (out && n < capacity && !out.put(n, v)) {
        throw invalidRequest(`input "${name}": element ${n} is ${JSON.stringify(v)?.slice(0, 32)}, not a ${datatype} value`);
      }
      if (!out && typeof v !== 'number') throw invalidRequest(`input "${name}": element ${n} is not a number`);
      n++;
    }
  };
  walk(data, 1);
  return n;
}

function inferResponse(r: ResultFrame, request: ParsedInfer) {
  const names = request.outputs ?? Object.keys(r.outputs);
  return {
    model_name: r.model,
    model_version: r.version,
    id: request.id,
    parameters: {
      node: r.node,
      worker: r.worker,
      batch_size: r.batchSize,
      queue_ms: r.timings.queueMs,
      infer_ms: r.timings.inferMs,
    },
    outputs: names.flatMap((name) => {
      const t = Object.hasOwn(r.outputs, name) ? r.outputs[name] : undefined;
      return t ? [{ name, shape: t.shape, datatype: DATATYPE[t.dtype], data: numbers(t) }] : [];
    }),
  };
}

/** A wire tensor's elements as numbers for JSON (int64 past 2^53 loses precision, as JSON does). */
function numbers(t: WireTensor): number[] {
  const width = DTYPE_BYTES[t.dtype];
  // A typed-array view needs an aligned offset; bytes that arrived unaligned are copied once.
  const bytes = t.data.byteOffset % width === 0 ? t.data : t.data.slice();
  const { buffer, byteOffset } = bytes;
  const n = Math.floor(bytes.byteLength / width);
  switch (t.dtype) {
    case 'float32':
      return Array.from(new Float32Array(buffer, byteOffset, n));
    case 'float64':
      return Array.from(new Float64Array(buffer, byteOffset, n));
    case 'int32':
      return Array.from(new Int32Array(buffer, byteOffset, n));
    case 'uint8':
      return Array.from(new Uint8Array(buffer, byteOffset, n));
    case 'int8':
      return Array.from(new Int8Array(buffer, byteOffset, n));
    case 'int64':
      return Array.from(new BigInt64Array(buffer, byteOffset, n), Number);
  }
}

function object(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalidRequest(`${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

function boundedString(v: unknown, what: string, min: number, max: number): string {
  if (typeof v !== 'string' || v.length < min || v.length > max) {
    throw invalidRequest(`${what} must be a string of ${min} to ${max} characters`);
  }
  return v;
}

/** `{"error": message}` with the code's status; `overloaded` adds Retry-After in whole seconds (at least 1). */
function fail(res: ServerResponse, e: Failure): void {
  if (res.headersSent) return;
  if (e.code === 'overloaded') res.setHeader('retry-after', String(Math.max(1, Math.ceil((e.retryAfterMs ?? 0) / 1000))));
  json(res, STATUS[e.code], { error: e.message });
}

/** Last resort: a 500 when nothing has been sent yet, otherwise the response is cut off. */
function internalError(res: ServerResponse): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  json(res, 500, { error: 'internal error' });
}
