/**
 * A worker actor fronts one worker_thread holding one ONNX session. It runs
 * one batch at a time for its batcher. Any failure (a run that throws, a
 * thread that dies, a run hung past the watchdog, a model that will not
 * load) crashes the actor; its supervision policy terminates the thread,
 * tells the batcher (which owns the in-flight batch and puts it back), and
 * restarts it with backoff until the restart intensity is exceeded.
 */
import { dispatch, spawn, type Ref } from 'nact';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../log.js';
import { InferenceThread } from '../models/InferenceThread.js';
import type { ModelSpec } from '../models/registry.js';
import type { ThreadFaults, ThreadTensor } from '../models/threadProtocol.js';
import type { Batch } from './BatcherLogic.js';
import type { BatcherActorMsg, InferRequest, WorkerMsg } from './messages.js';
import { onCrash, type RestartPolicy } from './RestartIntensity.js';

export interface WorkerOptions {
  name: string;
  spec: ModelSpec;
  batcher: Ref<BatcherActorMsg>;
  policy: RestartPolicy;
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
  thread(): InferenceThread | undefined;
  shutdown(): Promise<void>;
}

export function spawnWorker(parent: Ref<unknown>, o: WorkerOptions): { ref: Ref<WorkerMsg>; handle: WorkerHandle } {
  // Lives outside nact's state so the crash policy can reach the thread of the failed incarnation.
  const slot = { thread: undefined as InferenceThread | undefined, generation: 0, restarts: [] as number[], closed: false };
  const log = o.log.child({ actor: `${o.spec.name}/${o.name}` });

  const startThread = (self: Ref<WorkerMsg>) => {
    const generation = ++slot.generation;
    InferenceThread.start(o.spec.path, o.spec.intraOpThreads, o.faults).then(
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
    async (state: null, msg: WorkerMsg) => {
      switch (msg.t) {
        case 'started':
          if (msg.generation === slot.generation) {
            log.debug({ threadId: slot.thread?.threadId }, 'worker ready');
            dispatch(o.batcher, { t: 'workerReady', worker: o.name });
          }
          return state;
        case 'startFailed':
        case 'threadDied':
          if (msg.generation === slot.generation) throw new Error(msg.error);
          return state;
        case 'run': {
          const thread = slot.thread;
          if (!thread) throw new Error('run before the worker thread started');
          const watchdog = setTimeout(() => void thread.terminate(), o.runTimeoutMs);
          try {
            const { outputs, inferMs } = await thread.run(msg.batch.id, concatInputs(o.spec, msg.batch));
            dispatch(o.batcher, { t: 'batchDone', worker: o.name, batchId: msg.batch.id, inferMs, outputs });
          } finally {
            clearTimeout(watchdog);
          }
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
        const old = slot.thread;
        slot.thread = undefined;
        slot.generation++;
        void old?.terminate();
        if (slot.closed) return ctx.stop;
        const decision = onCrash(o.policy, slot.restarts, performance.now());
        const error = err?.message ?? 'unknown error';
        if (decision.t === 'giveUp') {
          log.error({ err: error, restarts: slot.restarts.length }, 'worker crashed too often; giving up');
          dispatch(o.batcher, { t: 'workerStopped', worker: o.name, error });
          return ctx.stop;
        }
        log.warn({ err: error, backoffMs: decision.afterMs }, 'worker crashed; restarting');
        dispatch(o.batcher, { t: 'workerCrashed', worker: o.name, error });
        o.onRestart?.();
        if (decision.afterMs > 0) await new Promise((r) => setTimeout(r, decision.afterMs));
        return slot.closed ? ctx.stop : ctx.reset;
      },
    },
  );

  const handle: WorkerHandle = {
    name: o.name,
    thread: () => slot.thread,
    shutdown: async () => {
      slot.closed = true;
      slot.generation++;
      await slot.thread?.terminate();
    },
  };
  return { ref, handle };
}

/** Stacks the batch's inputs along dimension 0 into fresh buffers the thread can take. */
function concatInputs(spec: ModelSpec, batch: Batch<InferRequest>): Record<string, ThreadTensor> {
  const out: Record<string, ThreadTensor> = {};
  for (const { name, dtype } of spec.inputs) {
    let bytes = 0;
    for (const r of batch.requests) bytes += r.inputs[name]!.data.byteLength;
    const buffer = new ArrayBuffer(bytes);
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
