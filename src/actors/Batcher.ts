/**
 * The batcher actor: a thin shell around BatcherLogic. It feeds messages to
 * the transition function on the monotonic clock and carries out the
 * effects: batches to workers, errors and results to the origin sessions.
 */
import { dispatch, spawn, type Ref } from 'nact';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/Metrics.js';
import type { ModelSpec } from '../models/registry.js';
import type { ThreadTensor } from '../models/threadProtocol.js';
import type { ResultFrame, WireTensor } from '../transport/protocol.js';
import { initialBatcherState, nextDeadline, transition, type Batch, type BatcherEffect, type BatcherMsg, type BatcherState, type MemoryBudget } from './BatcherLogic.js';
import { errorFrame, type BatcherActorMsg, type InferRequest, type WorkerMsg } from './messages.js';
import type { TensorArena } from './tensorArena.js';

export interface BatcherOptions {
  spec: ModelSpec;
  nodeId: string;
  workerNames: readonly string[];
  /** Filled by the model supervisor once the workers are spawned. */
  workers: ReadonlyMap<string, Ref<WorkerMsg>>;
  log: Logger;
  /** Observes the queue and the running requests after every message, for routing and metrics. */
  onLoad?: (queued: number, running: number, readyWorkers: number) => void;
  metrics?: Metrics;
  /** The node's memory budget for queued tensors, shared by its batchers. */
  budget?: MemoryBudget;
  /** Where the tensors of the requests this batcher holds are kept, shared by the node's batchers. */
  arena?: TensorArena;
  /**
   * Where work goes that this batcher cannot run (no worker left, or the node
   * leaves): the router moves it to another node, or answers it `unavailable`.
   */
  handoff?: (req: InferRequest, canRunHere: boolean) => void;
  /** Told when the last worker has given up: the node stops offering the model. */
  onGaveUp?: () => void;
}

/** Expiry ticks are at least this far apart, however many deadlines pass one after another. */
const MIN_TICK_GAP_MS = 5;

export function spawnBatcher(parent: Ref<unknown>, o: BatcherOptions): Ref<BatcherActorMsg> {
  const log = o.log.child({ actor: `${o.spec.name}/batcher` });
  const state: BatcherState<InferRequest> = initialBatcherState(o.spec.batching, o.workerNames, o.budget);
  // The outputs of the batchDone being handled, for the `complete` effect it yields.
  let done: { outputs: Record<string, ThreadTensor>; inferMs: number } | undefined;
  // When each request of a crashed batch lost its worker, to time the re-run (bounded by the ledger).
  const crashedAt = new Map<string, number>();
  // One timer for the earliest deadline in the queue; none while no queued request has one.
  let expiry: { at: number; timer: NodeJS.Timeout } | undefined;
  let lastTickAt = -Infinity;
  const armExpiry = (self: Ref<BatcherActorMsg>, now: number) => {
    const deadline = nextDeadline(state);
    if (deadline === Infinity) return;
    const due = Math.max(deadline, lastTickAt + MIN_TICK_GAP_MS);
    if (expiry !== undefined && expiry.at <= due) return;
    if (expiry !== undefined) clearTimeout(expiry.timer);
    // Timers fire on the loop's millisecond clock, possibly a fraction early: one more ms makes the deadline past.
    const timer = setTimeout(() => {
      expiry = undefined;
      dispatch(self, { t: 'tick' });
    }, Math.ceil(Math.max(0, due - now)) + 1);
    timer.unref();
    expiry = { at: due, timer };
  };

  // The request of the enqueue being handled, until an effect answers it.
  let arriving: InferRequest | undefined;

  const run = (fx: BatcherEffect<InferRequest>) => {
    switch (fx.t) {
      case 'run': {
        if (crashedAt.size > 0) {
          for (const r of fx.batch.requests) {
            const at = crashedAt.get(r.key);
            if (at === undefined) continue;
            crashedAt.delete(r.key);
            o.metrics?.rerunAfterCrash(o.spec.name, fx.batch.startedAt - at);
          }
        }
        const worker = o.workers.get(fx.batch.worker);
        if (worker) dispatch(worker, { t: 'run', batch: fx.batch });
        return;
      }
      case 'reject':
        if (fx.req === arriving) arriving = undefined;
        if (fx.error.code === 'unavailable' && o.handoff) {
          o.arena?.release(fx.req, true);
          return o.handoff(fx.req, [...state.workers.values()].some((w) => w.state !== 'stopped'));
        }
        o.arena?.release(fx.req);
        if (fx.shed) o.metrics?.shed(o.spec.name, fx.req.priority, fx.shed);
        dispatch(fx.req.replyTo, { t: 'reply', key: fx.req.key, frame: errorFrame(fx.req.id, fx.error) });
        return;
      case 'complete':
        if (!done) return;
        o.metrics?.batchRan(o.spec.name, fx.batch.requests.length, done.inferMs, fx.batch.requests.map((r) => fx.batch.startedAt - r.receivedAt));
        deliver(o, fx.batch, done.outputs, done.inferMs);
        if (o.arena) for (const r of fx.batch.requests) o.arena.release(r);
        return;
    }
  };

  return spawn(
    parent as Ref<never>,
    (s: null, msg: BatcherActorMsg, ctx) => {
      const now = performance.now();
      if (msg.t === 'tick') lastTickAt = now;
      let logicMsg: BatcherMsg<InferRequest>;
      switch (msg.t) {
        case 'stats':
          dispatch(msg.replyTo, {
            queued: state.queued,
            running: running(state),
            workers: Object.fromEntries([...state.workers].map(([k, v]) => [k, v.state])),
          });
          return s;
        case 'batchDone':
          done = { outputs: msg.outputs, inferMs: msg.inferMs };
          logicMsg = { t: 'batchDone', worker: msg.worker, batchId: msg.batchId, inferMs: msg.inferMs, ...(msg.next !== undefined ? { next: msg.next } : {}) };
          break;
        case 'workerCrashed':
        case 'workerStopped':
          log.warn({ worker: msg.worker, err: msg.error, event: msg.t }, 'worker lost; its batch goes back to the queue');
          {
            const slot = state.workers.get(msg.worker);
            if (slot?.state === 'busy') for (const b of slot.batches) for (const r of b.requests) crashedAt.set(r.key, now);
          }
          logicMsg = { t: msg.t, worker: msg.worker, ...(msg.innocent ? { innocent: true } : {}) };
          if (msg.t === 'workerStopped' && [...state.workers].every(([w, slot]) => w === msg.worker || slot.state === 'stopped')) {
            log.error('every worker gave up: queued work moves to other nodes');
            o.onGaveUp?.();
          }
          break;
        default:
          logicMsg = msg;
      }
      if (logicMsg.t === 'enqueue') arriving = logicMsg.req;
      for (const fx of transition(state, logicMsg, now)) run(fx);
      // Queued, or in a batch a worker has yet to read (it reads when handed the batch, after this
      // handler): the tensors go to the arena. A refused request keeps its frame and costs no copy.
      if (arriving !== undefined) o.arena?.hold(arriving);
      arriving = undefined;
      done = undefined;
      armExpiry(ctx.self as Ref<BatcherActorMsg>, now);
      o.onLoad?.(state.queued, running(state), readyWorkers(state));
      return s;
    },
    'batcher',
  );
}

/** Splits the batch's outputs by rows (views, no copies) and answers each origin. */
function deliver(o: BatcherOptions, batch: Batch<InferRequest>, outputs: Record<string, ThreadTensor>, inferMs: number): void {
  const now = performance.now();
  let row = 0;
  for (const req of batch.requests) {
    const out: Record<string, WireTensor> = {};
    for (const [name, t] of Object.entries(outputs)) {
      const rowBytes = t.buffer.byteLength / Math.max(1, t.shape[0] ?? 1);
      out[name] = {
        dtype: t.dtype,
        shape: [req.rows, ...t.shape.slice(1)],
        data: new Uint8Array(t.buffer, row * rowBytes, req.rows * rowBytes),
      };
    }
    row += req.rows;
    const frame: ResultFrame = {
      t: 'result',
      id: req.id,
      model: req.spec.name,
      version: req.spec.version,
      outputs: out,
      node: o.nodeId,
      worker: `${o.nodeId}/${req.spec.name}/${batch.worker}`,
      batchSize: batch.requests.length,
      timings: {
        queueMs: round(batch.startedAt - req.receivedAt),
        inferMs: round(inferMs),
        totalMs: round(now - req.receivedAt),
      },
    };
    dispatch(req.replyTo, { t: 'reply', key: req.key, frame });
  }
}

const running = (s: BatcherState<InferRequest>) => {
  let n = 0;
  for (const w of s.workers.values()) if (w.state === 'busy') for (const b of w.batches) n += b.requests.length;
  return n;
};

const readyWorkers = (s: BatcherState<InferRequest>) => {
  let n = 0;
  for (const w of s.workers.values()) if (w.state === 'idle' || w.state === 'busy') n++;
  return n;
};

const round = (ms: number) => Math.round(ms * 1000) / 1000;
