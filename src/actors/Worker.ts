/**
 * A worker actor fronts one ONNX session: on a worker_thread, or for a model
 * of microsecond runs on the node's own thread (InlineSession). It hands
 * its batcher's batches to the thread as they come (the batcher may stage
 * one behind the running one, and a high-priority one beside it); the thread
 * runs them one at a time, high priority first, and each result goes back to
 * the batcher as it lands, naming the run the thread started next. Any failure (a run
 * that throws, a thread that dies, a run hung past the watchdog, a model
 * that will not load) crashes the actor; its supervision policy stops the
 * thread (a native run in progress may end first: only the watchdog kills a
 * thread mid-run), tells the batcher (which owns the in-flight batches and
 * puts them back), and restarts it with backoff until the restart intensity
 * is exceeded.
 */
import { dispatch, spawn, type Ref } from 'nact';
import type { Logger } from '../log.js';
import { InferenceThread, type ModelRunner } from '../models/InferenceThread.js';
import { InlineSession } from '../models/InlineSession.js';
import type { ModelSpec } from '../models/registry.js';
import type { ThreadFaults, ThreadTensor } from '../models/threadProtocol.js';
import { BatchBuffers } from './batchBuffers.js';
import { isUrgent, type Batch } from './BatcherLogic.js';
import type { BatcherActorMsg, InferRequest, WorkerMsg } from './messages.js';
import { RunWatchdog } from './RunWatchdog.js';
import type { Supervision } from './Supervision.js';

export interface WorkerOptions {
  name: string;
  spec: ModelSpec;
  batcher: Ref<BatcherActorMsg>;
  /** The model's supervisor: decides whether a crashed worker restarts (and when), or stops. */
  supervision: Supervision;
  /** A run longer than this is treated as a hung worker. */
  runTimeoutMs: number;
  faults?: ThreadFaults;
  log: Logger;
  /** Told each restart (metrics). */
  onRestart?: () => void;
}

/** Lets the node stop every thread on shutdown, and tests crash one. */
export interface WorkerHandle {
  readonly name: string;
  thread(): ModelRunner | undefined;
  shutdown(): Promise<void>;
}

export function spawnWorker(parent: Ref<unknown>, o: WorkerOptions): { ref: Ref<WorkerMsg>; handle: WorkerHandle } {
  // Lives outside nact's state so the crash policy can reach the thread of the failed incarnation.
  const slot = { thread: undefined as ModelRunner | undefined, generation: 0, closed: false };
  // Watchdog over the run at the head of the thread's queue: armed when it starts, re-armed as each ends.
  const watchdog = new RunWatchdog({ limitMs: o.runTimeoutMs });
  const log = o.log.child({ actor: `${o.spec.name}/${o.name}` });
  // Outside nact's state too: the buffers outlive a restart of the thread.
  const buffers = new BatchBuffers();

  const startThread = (self: Ref<WorkerMsg>) => {
    const generation = ++slot.generation;
    const started: Promise<ModelRunner> = o.spec.execution === 'inline'
      ? InlineSession.start(o.spec.path, o.spec.intraOpThreads, o.faults)
      : InferenceThread.start(o.spec.path, o.spec.intraOpThreads, o.spec.inferenceNice, o.faults);
    started.then(
      (thread) => {
        if (generation !== slot.generation || slot.closed) return void thread.terminate();
        slot.thread = thread;
        thread.onDeath((e) => dispatch(self, { t: 'threadDied', generation, error: e.message }));
        dispatch(self, { t: 'started', generation });
      },
      (e: Error) => dispatch(self, { t: 'startFailed', generation, error: e.message }),
    );
  };

  const ref = spawn(
    parent as Ref<never>,
    (state: null, msg: WorkerMsg, ctx) => {
      switch (msg.t) {
        case 'started':
          if (msg.generation === slot.generation) {
            log.debug({ threadId: slot.thread?.threadId }, 'worker ready');
            dispatch(o.batcher, { t: 'workerReady', worker: o.name });
          }
          return state;
        case 'startFailed':
        case 'threadDied':
        case 'runFailed':
          if (msg.generation === slot.generation) throw new Error(msg.error);
          return state;
        case 'run': {
          const thread = slot.thread;
          if (!thread) throw new Error('run before the worker thread started');
          const { generation } = slot;
          const batchId = msg.batch.id;
          const hung = () => void thread.terminate();
          if (thread.runsHeld === 0) watchdog.arm(hung);
          thread.run(batchId, concatInputs(o.spec, msg.batch, buffers), isUrgent(msg.batch)).then(
            ({ outputs, inferMs, next, spent }) => {
              if (spent !== undefined) buffers.give(spent);
              if (generation !== slot.generation) return;
              if (thread.runsHeld === 0) watchdog.disarm();
              else watchdog.arm(hung);
              dispatch(o.batcher, { t: 'batchDone', worker: o.name, batchId, inferMs, outputs, ...(next !== undefined ? { next } : {}) });
            },
            (e: Error) => dispatch(ctx.self as Ref<WorkerMsg>, { t: 'runFailed', generation, error: e.message }),
          );
          return state;
        }
      }
    },
    o.name,
    {
      initialStateFunc: (ctx) => {
        startThread(ctx.self as Ref<WorkerMsg>);
        return null;
      },
      onCrash: async (_msg, err, ctx) => {
        watchdog.disarm();
        const old = slot.thread;
        slot.thread = undefined;
        slot.generation++;
        void old?.stop(o.runTimeoutMs);
        if (slot.closed) return ctx.stop;
        const error = err?.message ?? 'unknown error';
        // The batch in flight goes back to the queue now, not after the backoff; it is not to blame
        // when the supervisor took this worker down for a sibling.
        const innocent = o.supervision.isStopping(o.name);
        dispatch(o.batcher, { t: 'workerCrashed', worker: o.name, error, ...(innocent ? { innocent } : {}) });
        log.warn({ err: error }, 'worker crashed');
        const decision = await o.supervision.exited(o.name, o.supervision.gen(o.name));
        if (decision === 'stop' || slot.closed) {
          log.error({ err: error }, 'worker stopped by its supervisor');
          dispatch(o.batcher, { t: 'workerStopped', worker: o.name, error });
          return ctx.stop;
        }
        o.onRestart?.();
        return ctx.reset;
      },
    },
  );

  o.supervision.register(o.name, {
    // A sibling's restart takes this worker down too (one_for_all, rest_for_one): its thread dies, the actor crashes.
    stopForRestart: () => void slot.thread?.stop(o.runTimeoutMs),
  });

  const handle: WorkerHandle = {
    name: o.name,
    thread: () => slot.thread,
    shutdown: async () => {
      slot.closed = true;
      slot.generation++;
      await slot.thread?.stop(o.runTimeoutMs);
    },
  };
  return { ref, handle };
}

/** Stacks the batch's inputs along dimension 0 into buffers of their own, which the thread can take. */
function concatInputs(spec: ModelSpec, batch: Batch<InferRequest>, buffers: BatchBuffers): Record<string, ThreadTensor> {
  const out: Record<string, ThreadTensor> = {};
  for (const { name, dtype } of spec.inputs) {
    let bytes = 0;
    for (const r of batch.requests) bytes += r.inputs[name]!.data.byteLength;
    // Every byte is written below, so the buffer is not zeroed first (`new ArrayBuffer` memset each
    // batch: 3 % of the event loop's CPU in a text-orientation closed loop), and one of a batch before
    // of this very size serves.
    const buffer = buffers.take(bytes);
    const view = new Uint8Array(buffer);
    let offset = 0;
    for (const r of batch.requests) {
      const d = r.inputs[name]!.data;
      view.set(d, offset);
      offset += d.byteLength;
    }
    out[name] = { dtype, shape: [batch.rows, ...batch.requests[0]!.inputs[name]!.shape.slice(1)], buffer };
  }
  return out;
}
