/**
 * Typed client for the actorserve stream protocol (`ws://HOST:PORT/v1/stream`,
 * docs/protocol.md). One WebSocket, many requests in flight, answers matched
 * by id in any order.
 *
 * Tensors go in and come out as float32. Bytes travel as-is: an input's
 * `Float32Array` is sent through a `Uint8Array` view (no copy into an array of
 * numbers), and an output is a view over the received frame when its bytes
 * are 4-byte aligned, a copy otherwise. Like the server, this assumes a
 * little-endian host.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import WebSocket, { type RawData } from 'ws';
import { ActorserveError, CloseCode, ERROR_CODES, type ErrorCode } from '../errors.js';
import { decodeUntrusted, encode } from '../transport/codec.js';
import { beat, type Liveness } from '../transport/keepalive.js';
import {
  DTYPE_BYTES,
  isDType,
  type InferFrame,
  type Priority,
  type Timings,
  type WelcomeFrame,
  type WireTensor,
} from '../transport/protocol.js';

/** A float32 tensor: `data.length` must equal the product of `shape`. */
export interface Float32Tensor {
  data: Float32Array;
  shape: number[];
}

export interface InferOptions {
  /** Model version; the server picks its default when left out. */
  version?: string;
  /** Queue lane; the server treats a missing priority as `normal`. */
  priority?: Priority;
  /** Relative deadline in ms, counted by the server from when it receives the frame. */
  deadlineMs?: number;
  /** Routing key: requests with the same key prefer the same node. */
  key?: string;
  /**
   * Aborting sends a `cancel` frame and rejects at once with code `cancelled`;
   * a late result from the server is then dropped. While waiting to retry, it
   * rejects `cancelled` at once too.
   */
  signal?: AbortSignal;
  /**
   * Try again on `overloaded`, after the server's `retryAfterMs` (never
   * sooner), spread by a random extra of up to half of it so that refused
   * clients do not all come back at the same instant. Only `overloaded` is
   * retried: nothing ran, and the server said when to come back. With
   * `deadlineMs`, each try carries the time left, and no retry is made that
   * could not start before the deadline. Off by default.
   */
  retry?: RetryOptions;
}

export interface RetryOptions {
  /** Most tries in all, the first included. Default 3; an integer >= 1. */
  attempts?: number;
  /** Longest wait before one retry; a server asking for longer ends the retries. Default 10 000 ms. */
  maxDelayMs?: number;
}

export interface InferResult {
  /** The id this client gave the request (with retries, the try that was answered). */
  id: number;
  model: string;
  version: string;
  outputs: Record<string, Float32Tensor>;
  node: string;
  worker: string;
  batchSize: number;
  timings: Timings;
}

/** One request of {@link Client.stream}. Extra fields are kept and handed back in its outcome. */
export interface StreamRequest extends Omit<InferOptions, 'signal' | 'retry'> {
  model: string;
  inputs: Record<string, Float32Tensor>;
}

export type StreamOutcome<R extends StreamRequest = StreamRequest> =
  | { ok: true; request: R; result: InferResult }
  | { ok: false; request: R; error: ActorserveError };

export interface StreamOptions {
  /**
   * Most requests of this stream in flight at once. Default 64; capped at the
   * server's `limits.maxInFlight`. Must be an integer >= 1.
   */
  window?: number;
  /** Retry every request of the stream on `overloaded`, as {@link InferOptions.retry}; a retry keeps its window slot. */
  retry?: RetryOptions;
}

export interface ConnectOptions {
  /** Time allowed for the handshake and the welcome frame. Default 10 000 ms. */
  timeoutMs?: number;
  /** Extra HTTP headers for the upgrade request (e.g. authorization). */
  headers?: Record<string, string>;
  /**
   * Ping the node this often; a node that answers neither that ping nor with
   * a frame by the next is taken for gone (its machine lost, a NAT that
   * forgot the connection) and the connection is closed, every request in
   * flight rejected `unavailable`, instead of waiting on a socket that will
   * never speak again. 0 turns it off. Default 20 000 ms.
   */
  pingMs?: number;
  /**
   * Connect again when the node is at its connection cap (HTTP 503 with
   * `Retry-After`: `overloaded`), as {@link InferOptions.retry}; `timeoutMs`
   * holds for each try. Off by default.
   */
  retry?: RetryOptions;
}

interface Pending {
  resolve: (r: InferResult) => void;
  reject: (e: ActorserveError) => void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

const CLOSE_WAIT_MS = 2_000;
/** The wait before a retry when an `overloaded` answer named none. */
const DEFAULT_RETRY_AFTER_MS = 250;

/** Retry options with their defaults. @throws RangeError for bad ones. */
function retrySettings(r: RetryOptions): Required<RetryOptions> {
  const attempts = r.attempts ?? 3;
  const maxDelayMs = r.maxDelayMs ?? 10_000;
  if (!Number.isInteger(attempts) || attempts < 1) throw new RangeError(`retry.attempts must be an integer >= 1, got ${attempts}`);
  if (!(maxDelayMs >= 0)) throw new RangeError(`retry.maxDelayMs must be a number >= 0, got ${maxDelayMs}`);
  return { attempts, maxDelayMs };
}

/**
 * Runs `once` again while it fails `overloaded`, as {@link RetryOptions} says: after the server's
 * `retryAfterMs` plus up to half of it at random, never past `maxDelayMs` or the `left()` ms the
 * caller has. Rejects with the last failure, or `cancelled` when `signal` aborts a wait.
 */
async function withRetry<T>(r: Required<RetryOptions>, once: () => Promise<T>, signal?: AbortSignal, left: () => number = () => Infinity): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await once();
    } catch (e) {
      if (!(e instanceof ActorserveError) || e.code !== 'overloaded' || attempt >= r.attempts) throw e;
      const asked = e.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS;
      const wait = asked * (1 + Math.random() / 2);
      if (asked > r.maxDelayMs || wait >= left()) throw e;
      await waitOrAbort(Math.min(wait, r.maxDelayMs), signal);
    }
  }
}

/** Resolves after `ms`; rejects `cancelled` as soon as `signal` aborts. */
function waitOrAbort(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return sleep(ms, undefined, signal === undefined ? {} : { signal }).catch(() => {
    throw new ActorserveError('cancelled', 'aborted while waiting to retry');
  });
}

/**
 * Connects to a node and waits for its welcome frame.
 *
 * Defaults: `timeoutMs` 10 000, `pingMs` 20 000. Rejects with `ActorserveError` code
 * `unauthorized` when the upgrade is refused with HTTP 401/403, `overloaded`
 * (with `retryAfterMs`) with HTTP 503 and `Retry-After` (the node holds its
 * most connections; with `retry`, once its tries are spent), `unavailable`
 * for any other failure (refused, timed out, closed or garbled before the
 * welcome). Throws `RangeError` for a bad `timeoutMs`, `pingMs` or `retry`.
 */
export function connect(url: string, opts: ConnectOptions = {}): Promise<Client> {
  return Client.connect(url, opts);
}

export class Client {
  /** The server's welcome frame: node id, models with their tensor specs, limits. */
  readonly welcome: WelcomeFrame;
  readonly url: string;

  readonly #ws: WebSocket;
  readonly #pending = new Map<number, Pending>();
  readonly #closedPromise: Promise<void>;
  #nextId = 1;
  /** Set once the connection is unusable; new requests reject with it. */
  #closed: ActorserveError | undefined;
  #lastSocketError = '';
  /** The keepalive's view of the node. */
  readonly #liveness: Liveness = { awaitingPong: false };

  private constructor(ws: WebSocket, welcome: WelcomeFrame, url: string, pingMs: number) {
    this.#ws = ws;
    this.welcome = welcome;
    this.url = url;
    const ping = pingMs > 0 ? setInterval(() => this.#ping(pingMs), pingMs) : undefined;
    ping?.unref();
    this.#closedPromise = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        clearInterval(ping);
        this.#onClose(code, reason.toString());
        resolve();
      });
    });
    ws.on('error', (e) => {
      this.#lastSocketError = e.message;
    });
    ws.on('pong', () => (this.#liveness.awaitingPong = false));
    ws.on('message', (data) => {
      this.#liveness.awaitingPong = false;
      this.#onMessage(data);
    });
  }

  /** See {@link connect}. */
  static connect(url: string, opts: ConnectOptions = {}): Promise<Client> {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw new RangeError(`timeoutMs must be a positive number, got ${timeoutMs}`);
    }
    const pingMs = opts.pingMs ?? 20_000;
    if (!Number.isFinite(pingMs) || pingMs < 0) {
      throw new RangeError(`pingMs must be a non-negative number, got ${pingMs}`);
    }
    const once = () => Client.#connectOnce(url, opts.headers, timeoutMs, pingMs);
    return opts.retry === undefined ? once() : withRetry(retrySettings(opts.retry), once);
  }

  static #connectOnce(url: string, headers: Record<string, string> | undefined, timeoutMs: number, pingMs: number): Promise<Client> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        // Tensors do not compress well and deflate costs CPU on both ends.
        perMessageDeflate: false,
        handshakeTimeout: timeoutMs,
        ...(headers !== undefined && { headers }),
      });
      let settled = false;
      const fail = (e: ActorserveError): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.terminate();
        reject(e);
      };
      const timer = setTimeout(
        () => fail(new ActorserveError('unavailable', `no welcome from ${url} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        const retryAfterS = status === 503 ? Number(res.headers['retry-after']) : Number.NaN;
        if (Number.isFinite(retryAfterS) && retryAfterS >= 0) {
          // A node at its connection cap: busy, not gone.
          fail(new ActorserveError('overloaded', `${url} holds its most connections (HTTP 503)`, retryAfterS * 1000));
          return;
        }
        const code: ErrorCode = status === 401 || status === 403 ? 'unauthorized' : 'unavailable';
        fail(new ActorserveError(code, `${url} refused the WebSocket upgrade with HTTP ${status}`));
      });
      ws.on('error', (e) => fail(new ActorserveError('unavailable', `cannot connect to ${url}: ${e.message}`)));
      ws.on('close', (code, reason) =>
        fail(new ActorserveError('unavailable', `${url} closed before its welcome (${describeClose(code, reason)})`)),
      );
      ws.once('message', (data) => {
        if (settled) return;
        let frame: unknown;
        try {
          frame = decodeUntrusted(toBytes(data));
        } catch {
          fail(new ActorserveError('unavailable', `${url} sent an undecodable first frame`));
          return;
        }
        if (!isWelcome(frame)) {
          fail(new ActorserveError('unavailable', `${url} did not open with a welcome frame`));
          return;
        }
        settled = true;
        clearTimeout(timer);
        ws.removeAllListeners('unexpected-response');
        ws.removeAllListeners('error');
        ws.removeAllListeners('close');
        // Synchronous, so no later message can slip past before the client listens.
        resolve(new Client(ws, frame, url, pingMs));
      });
    });
  }

  /** Requests sent by this client and not yet answered. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * Runs one inference. Every input is float32 `{ data, shape }`; outputs come
   * back as float32 whatever dtype the server sent.
   *
   * Rejects with `ActorserveError`: the server's code (`overloaded` with
   * `retryAfterMs`, `deadline_exceeded`, `model_not_found`, ...);
   * `invalid_request` without sending when an input's shape does not match its
   * data or the frame would exceed the server's `maxFrameBytes`; `cancelled`
   * when `opts.signal` aborts; `unavailable` when the connection is or gets
   * closed; `internal` when the result frame is malformed. With `opts.retry`,
   * the last `overloaded` once the retries are spent. Throws `RangeError` for
   * bad retry options.
   */
  infer(model: string, inputs: Record<string, Float32Tensor>, opts: InferOptions = {}): Promise<InferResult> {
    if (opts.retry === undefined) return this.#start(model, inputs, opts).promise;
    return this.#inferRetrying(model, inputs, opts, retrySettings(opts.retry));
  }

  #inferRetrying(model: string, inputs: Record<string, Float32Tensor>, opts: InferOptions, retry: Required<RetryOptions>): Promise<InferResult> {
    const started = performance.now();
    const left = () => (opts.deadlineMs === undefined ? Infinity : opts.deadlineMs - (performance.now() - started));
    let first = true;
    return withRetry(retry, () => {
      if (first || opts.deadlineMs === undefined) {
        first = false;
        return this.#start(model, inputs, opts).promise;
      }
      const deadlineMs = left();
      // Only a timer that fired late gets here with no time left.
      if (deadlineMs <= 0) return Promise.reject(new ActorserveError('deadline_exceeded', 'the deadline passed while waiting to retry'));
      return this.#start(model, inputs, { ...opts, deadlineMs }).promise;
    }, opts.signal, left);
  }

  /**
   * Sends requests pulled from `requests`, keeping at most `window` of them in
   * flight (default 64, capped at the server's `maxInFlight`), and yields each
   * outcome as it completes: completion order, not request order. Failures are
   * outcomes (`ok: false`), not exceptions; the iteration throws only if
   * `requests` itself throws. It ends when the source is exhausted and every
   * request is answered. Leaving early (`break`, `return`, a throw) cancels
   * the requests still in flight (and their waits to retry). Throws
   * `RangeError` for a bad `window` or bad `retry` options.
   */
  stream<R extends StreamRequest>(
    requests: Iterable<R> | AsyncIterable<R>,
    opts: StreamOptions = {},
  ): AsyncIterable<StreamOutcome<R>> {
    const window = opts.window ?? 64;
    if (!Number.isInteger(window) || window < 1) {
      throw new RangeError(`window must be an integer >= 1, got ${window}`);
    }
    const limit = Math.min(window, this.welcome.limits.maxInFlight);
    if (opts.retry !== undefined) retrySettings(opts.retry);
    return this.#stream(requests, limit, opts.retry);
  }

  async *#stream<R extends StreamRequest>(
    requests: Iterable<R> | AsyncIterable<R>,
    limit: number,
    retry: RetryOptions | undefined,
  ): AsyncGenerator<StreamOutcome<R>, void, undefined> {
    const syncIt = Symbol.asyncIterator in requests ? undefined : (requests as Iterable<R>)[Symbol.iterator]();
    const asyncIt = syncIt === undefined ? (requests as AsyncIterable<R>)[Symbol.asyncIterator]() : undefined;
    const ready: StreamOutcome<R>[] = [];
    /** Requests in flight: each one's id, or with retries (a new id per try) what aborts it. */
    const running = new Set<number | AbortController>();
    let wake: (() => void) | undefined;
    const notify = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    // An async source is read concurrently with completions, so a slow source
    // never holds back results that are already here.
    type Pull = { result?: IteratorResult<R>; error?: { e: unknown } };
    let pull: Pull | undefined;
    let exhausted = false;

    const launch = (request: R): void => {
      // Options are copied field by field: a stray `signal` on a request must not
      // free its window slot before the server has let go of it.
      const opts: InferOptions = {
        ...(request.version !== undefined && { version: request.version }),
        ...(request.priority !== undefined && { priority: request.priority }),
        ...(request.deadlineMs !== undefined && { deadlineMs: request.deadlineMs }),
        ...(request.key !== undefined && { key: request.key }),
      };
      let id: number | AbortController;
      let promise: Promise<InferResult>;
      if (retry === undefined) ({ id, promise } = this.#start(request.model, request.inputs, opts));
      else {
        id = new AbortController();
        promise = this.infer(request.model, request.inputs, { ...opts, retry, signal: id.signal });
      }
      running.add(id);
      promise.then(
        (result) => ready.push({ ok: true, request, result }),
        (e: unknown) => ready.push({ ok: false, request, error: asActorserveError(e) }),
      ).finally(() => {
        running.delete(id);
        notify();
      });
    };

    try {
      for (;;) {
        if (syncIt !== undefined) {
          while (!exhausted && running.size < limit) {
            const n = syncIt.next();
            if (n.done === true) exhausted = true;
            else launch(n.value);
          }
        } else if (asyncIt !== undefined && !exhausted && pull === undefined && running.size < limit) {
          const slot: Pull = {};
          pull = slot;
          asyncIt.next().then(
            (result) => {
              slot.result = result;
              notify();
            },
            (e: unknown) => {
              slot.error = { e };
              notify();
            },
          );
        }
        if (pull?.error !== undefined) throw pull.error.e;
        if (pull?.result !== undefined) {
          const n = pull.result;
          pull = undefined;
          if (n.done === true) exhausted = true;
          else launch(n.value);
          continue;
        }
        const next = ready.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        if (exhausted && running.size === 0) return;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    } finally {
      for (const id of running) {
        if (typeof id === 'number') this.#cancel(id, 'stream closed before the request was answered');
        else id.abort();
      }
      if (!exhausted) {
        // Do not await a source that may never settle; just tell it we are done.
        if (syncIt !== undefined) syncIt.return?.();
        else if (pull === undefined) void asyncIt?.return?.()?.then(undefined, () => undefined);
      }
    }
  }

  /**
   * Closes the connection (code 1000). Requests still outstanding reject with
   * `unavailable`. Resolves once the socket is closed, forcing it shut after
   * 2 s if the server does not answer the close. Idempotent.
   */
  close(): Promise<void> {
    if (this.#closed === undefined) {
      this.#closed = new ActorserveError('unavailable', 'client closed');
      this.#rejectAll(this.#closed.message);
    }
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) {
      this.#ws.close(CloseCode.normal);
      const force = setTimeout(() => this.#ws.terminate(), CLOSE_WAIT_MS);
      force.unref();
      void this.#closedPromise.then(() => clearTimeout(force));
    }
    return this.#closedPromise;
  }

  #start(
    model: string,
    inputs: Record<string, Float32Tensor>,
    opts: InferOptions,
  ): { id: number; promise: Promise<InferResult> } {
    const id = this.#nextId++;
    if (this.#closed !== undefined) {
      return { id, promise: Promise.reject(new ActorserveError('unavailable', this.#closed.message)) };
    }
    if (opts.signal?.aborted === true) {
      return { id, promise: Promise.reject(new ActorserveError('cancelled', 'aborted before it was sent')) };
    }
    let bytes: Buffer;
    try {
      bytes = encode(inferFrame(id, model, inputs, opts));
    } catch (e) {
      return { id, promise: Promise.reject(asActorserveError(e)) };
    }
    const max = this.welcome.limits.maxFrameBytes;
    if (bytes.byteLength > max) {
      // The server would close the whole connection with 1009; refuse just this one.
      const e = new ActorserveError('invalid_request', `frame of ${bytes.byteLength} bytes exceeds maxFrameBytes ${max}`);
      return { id, promise: Promise.reject(e) };
    }
    const promise = new Promise<InferResult>((resolve, reject) => {
      const entry: Pending = { resolve, reject, signal: opts.signal, onAbort: undefined };
      if (opts.signal !== undefined) {
        entry.onAbort = () => this.#cancel(id, 'aborted by the caller');
        opts.signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#pending.set(id, entry);
    });
    this.#ws.send(bytes);
    return { id, promise };
  }

  /** Rejects locally with `cancelled` and tells the server, which drops it if still queued. */
  #cancel(id: number, message: string): void {
    const entry = this.#take(id);
    if (entry === undefined) return;
    if (this.#ws.readyState === WebSocket.OPEN) this.#ws.send(encode({ t: 'cancel', id }));
    entry.reject(new ActorserveError('cancelled', message));
  }

  #take(id: unknown): Pending | undefined {
    if (typeof id !== 'number') return undefined;
    const entry = this.#pending.get(id);
    if (entry === undefined) return undefined;
    this.#pending.delete(id);
    if (entry.onAbort !== undefined) entry.signal?.removeEventListener('abort', entry.onAbort);
    return entry;
  }

  #onMessage(data: RawData): void {
    let frame: unknown;
    try {
      frame = decodeUntrusted(toBytes(data));
    } catch {
      // The stream can no longer be trusted; same close code the server uses.
      this.#shutdown(CloseCode.invalidPayload, 'undecodable frame from server');
      return;
    }
    if (!isRecord(frame)) return;
    switch (frame['t']) {
      case 'result': {
        const entry = this.#take(frame['id']);
        if (entry === undefined) return; // cancelled, or a duplicate
        try {
          entry.resolve(toResult(frame));
        } catch (e) {
          entry.reject(asActorserveError(e));
        }
        return;
      }
      case 'error': {
        const entry = this.#take(frame['id']);
        if (entry === undefined) return; // uncorrelated (id null) or already settled
        const code = (ERROR_CODES as readonly unknown[]).includes(frame['code']) ? (frame['code'] as ErrorCode) : 'internal';
        const message = typeof frame['message'] === 'string' ? frame['message'] : `server error ${code}`;
        const retry = frame['retryAfterMs'];
        entry.reject(new ActorserveError(code, message, typeof retry === 'number' ? retry : undefined));
        return;
      }
      default:
        return; // unknown frame types are ignored so the server can add some
    }
  }

  #shutdown(code: number, reason: string): void {
    this.#closed ??= new ActorserveError('unavailable', `connection closed (${code}: ${reason})`);
    this.#rejectAll(this.#closed.message);
    this.#ws.close(code, reason);
  }

  /** Closes a connection that gave no sign of life since the last ping, or pings it. */
  #ping(pingMs: number): void {
    if (this.#ws.readyState !== WebSocket.OPEN || beat(this.#ws, this.#liveness)) return;
    this.#closed ??= new ActorserveError('unavailable', `${this.url} answered no ping within ${pingMs} ms`);
    this.#ws.terminate();
  }

  #onClose(code: number, reason: string): void {
    const detail = describeClose(code, reason) + (this.#lastSocketError ? `; ${this.#lastSocketError}` : '');
    this.#closed ??= new ActorserveError('unavailable', `connection closed (${detail})`);
    this.#rejectAll(this.#closed.message);
  }

  #rejectAll(message: string): void {
    for (const id of [...this.#pending.keys()]) {
      this.#take(id)?.reject(new ActorserveError('unavailable', message));
    }
  }
}

function inferFrame(id: number, model: string, inputs: Record<string, Float32Tensor>, opts: InferOptions): InferFrame {
  const wire: Record<string, WireTensor> = {};
  for (const [name, t] of Object.entries(inputs)) {
    if (!(t.data instanceof Float32Array)) {
      throw new ActorserveError('invalid_request', `input ${name}: data must be a Float32Array`);
    }
    const n = elementCount(t.shape);
    if (n !== t.data.length) {
      throw new ActorserveError(
        'invalid_request',
        `input ${name}: shape [${String(t.shape)}] needs ${n} values, data has ${t.data.length}`,
      );
    }
    // A bin over the same bytes: msgpackr writes a Uint8Array as `bin`, while a
    // Float32Array would become an extension the server rejects.
    wire[name] = { dtype: 'float32', shape: t.shape, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  }
  return {
    t: 'infer',
    id,
    model,
    inputs: wire,
    ...(opts.version !== undefined && { version: opts.version }),
    ...(opts.priority !== undefined && { priority: opts.priority }),
    ...(opts.deadlineMs !== undefined && { deadlineMs: opts.deadlineMs }),
    ...(opts.key !== undefined && { key: opts.key }),
  };
}

/** Product of the dims, or NaN when a dim is not a non-negative integer. */
function elementCount(shape: unknown): number {
  if (!Array.isArray(shape)) return Number.NaN;
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || (d as number) < 0) return Number.NaN;
    n *= d as number;
  }
  return n;
}

function toResult(f: Record<string, unknown>): InferResult {
  const outputs: Record<string, Float32Tensor> = {};
  if (!isRecord(f['outputs'])) throw malformed('outputs is not a map');
  for (const [name, t] of Object.entries(f['outputs'])) outputs[name] = toFloat32(name, t);
  const timings = isRecord(f['timings']) ? f['timings'] : {};
  return {
    id: f['id'] as number,
    model: String(f['model']),
    version: String(f['version']),
    outputs,
    node: String(f['node']),
    worker: String(f['worker']),
    batchSize: Number(f['batchSize']),
    timings: {
      queueMs: Number(timings['queueMs']),
      inferMs: Number(timings['inferMs']),
      totalMs: Number(timings['totalMs']),
    },
  };
}

/** Wire tensor → float32, viewing the received bytes when aligned. */
function toFloat32(name: string, t: unknown): Float32Tensor {
  if (!isRecord(t)) throw malformed(`output ${name} is not a map`);
  const { dtype, shape, data } = t;
  if (!isDType(dtype)) throw malformed(`output ${name} has unknown dtype ${String(dtype)}`);
  if (!(data instanceof Uint8Array)) throw malformed(`output ${name} data is not bin`);
  const n = elementCount(shape);
  const width = DTYPE_BYTES[dtype];
  if (n * width !== data.byteLength) {
    throw malformed(`output ${name}: shape [${String(shape)}] of ${dtype} needs ${n * width} bytes, got ${data.byteLength}`);
  }
  const dims = [...(shape as number[])];
  // Copy when misaligned: a new Uint8Array owns a fresh buffer at offset 0. (Buffer#slice
  // would not do: it returns a view.)
  const bytes = data.byteOffset % width === 0 ? data : new Uint8Array(data);
  const { buffer, byteOffset } = bytes;
  switch (dtype) {
    case 'float32':
      return { shape: dims, data: new Float32Array(buffer, byteOffset, n) };
    case 'float64':
      return { shape: dims, data: Float32Array.from(new Float64Array(buffer, byteOffset, n)) };
    case 'int32':
      return { shape: dims, data: Float32Array.from(new Int32Array(buffer, byteOffset, n)) };
    case 'int64':
      return { shape: dims, data: Float32Array.from(new BigInt64Array(buffer, byteOffset, n), Number) };
    case 'uint8':
      return { shape: dims, data: Float32Array.from(new Uint8Array(buffer, byteOffset, n)) };
    case 'int8':
      return { shape: dims, data: Float32Array.from(new Int8Array(buffer, byteOffset, n)) };
    default: {
      const never: never = dtype;
      throw malformed(`output ${name} has unknown dtype ${String(never)}`);
    }
  }
}

const malformed = (what: string) => new ActorserveError('internal', `malformed result frame: ${what}`);

function isWelcome(f: unknown): f is WelcomeFrame {
  if (!isRecord(f) || f['t'] !== 'welcome' || !Array.isArray(f['models']) || !isRecord(f['limits'])) return false;
  const { maxInFlight, maxFrameBytes } = f['limits'];
  return typeof maxInFlight === 'number' && maxInFlight >= 1 && typeof maxFrameBytes === 'number' && maxFrameBytes >= 1;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

function describeClose(code: number, reason: Buffer | string): string {
  const r = reason.toString();
  return r ? `${code}: ${r}` : String(code);
}

function asActorserveError(e: unknown): ActorserveError {
  if (e instanceof ActorserveError) return e;
  return new ActorserveError('internal', e instanceof Error ? e.message : String(e));
}
