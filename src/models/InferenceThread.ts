/**
 * Main-thread handle on one worker_thread that owns one ONNX session.
 * Tensors cross by transfer (no copies); a thread that dies rejects its
 * pending run so the owning worker actor can crash and be restarted.
 */
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { projectRoot } from './registry.js';
import type { FromThread, ThreadFault, ThreadFaults, ThreadTensor, ToThread } from './threadProtocol.js';

/**
 * The thread runs compiled JS. Under vitest this module is loaded from
 * src/*.ts, and Node 20 cannot load TypeScript inside a worker_thread, so we
 * point at the build output (`npm test` builds first).
 */
const threadScript = (() => {
  const here = fileURLToPath(import.meta.url);
  return here.endsWith('.ts')
    ? join(projectRoot, 'dist', 'src', 'models', 'inferenceThreadMain.js')
    : join(fileURLToPath(new URL('.', import.meta.url)), 'inferenceThreadMain.js');
})();

export interface RunOutput {
  outputs: Record<string, ThreadTensor>;
  inferMs: number;
  /** The batch the thread started next, when one was waiting for it (see FromThread `done`). */
  next?: number;
  /** The run's input buffers, done with: the caller may fill them again. */
  spent?: ArrayBuffer[];
}

export class ThreadDied extends Error {
  readonly code = 'thread_died';
}

/**
 * What a worker actor drives: one ONNX session that runs batches one at a
 * time, on a worker_thread (InferenceThread) or on the node's own thread
 * (InlineSession, for models whose runs take microseconds).
 */
export interface ModelRunner {
  /** Runs one batch after the ones handed over before it, or (`urgent`) after the one running. */
  run(batchId: number, inputs: Record<string, ThreadTensor>, urgent?: boolean): Promise<RunOutput>;
  /** Runs handed over and not yet answered. */
  readonly runsHeld: number;
  /** For logs: the worker_thread's id; 0 on the node's own thread. */
  readonly threadId: number;
  onDeath(listener: (e: Error) => void): void;
  /** Chaos: the next run throws or hangs, or the runner dies now. */
  inject(fault: ThreadFault): void;
  /** Ends it now, a hung run included. */
  terminate(): Promise<void>;
  /** Lets the run in progress end, drops the staged ones, ends it; terminates it past `graceMs`. */
  stop(graceMs: number): Promise<void>;
}

/**
 * What both runners keep: the runs handed over and not yet answered, by
 * batch id, and the runner's end (every such run rejected, listeners told).
 */
export abstract class RunnerBase {
  private readonly pending = new Map<number, { resolve: (r: RunOutput) => void; reject: (e: Error) => void }>();
  protected dead: Error | undefined;
  private readonly deathListeners: ((e: Error) => void)[] = [];

  /** Runs handed over and not yet answered (the one running and those staged behind it). */
  get runsHeld(): number {
    return this.pending.size;
  }

  onDeath(listener: (e: Error) => void): void {
    this.deathListeners.push(listener);
  }

  /** Holds the answer of run `batchId` and hands the run over (`handOver`); refused once dead or for an id already held. */
  protected hold(batchId: number, handOver: () => void): Promise<RunOutput> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.pending.has(batchId)) return Promise.reject(new Error(`batch ${batchId} is already running`));
    return new Promise<RunOutput>((resolve, reject) => {
      this.pending.set(batchId, { resolve, reject });
      handOver();
    });
  }

  /** Answers run `batchId`, if still held: its output, or its error. */
  protected settle(batchId: number, outcome: RunOutput | Error): void {
    const p = this.pending.get(batchId);
    if (!p) return;
    this.pending.delete(batchId);
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  /** Ends the runner once: every held run rejects with `e`, then the listeners hear of it. */
  protected die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    const runs = [...this.pending.values()];
    this.pending.clear();
    for (const p of runs) p.reject(e);
    this.ended();
    for (const l of this.deathListeners) l(e);
  }

  /** What a runner lets go of when it ends, before its listeners are told. */
  protected ended(): void {}

  /** True when `p` settled within `ms`. */
  protected static async within(p: Promise<unknown>, ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), ms)));
    const how = await Promise.race([p, late]);
    clearTimeout(timer);
    return how !== 'late';
  }
}

export class InferenceThread extends RunnerBase implements ModelRunner {
  private readonly worker: Worker;

  private constructor(worker: Worker) {
    super();
    this.worker = worker;
    worker.on('message', (m: FromThread) => this.onMessage(m));
    worker.on('error', (e) => this.die(e));
    worker.on('exit', (code) => this.die(new ThreadDied(`inference thread exited with code ${code}`)));
  }

  /**
   * Starts a thread and loads the model in it.
   * @throws Error when the model cannot be loaded (the thread is stopped).
   */
  static async start(path: string, intraOpThreads: number, nice: number, faults?: ThreadFaults): Promise<InferenceThread> {
    const worker = new Worker(threadScript);
    const ready = new Promise<void>((resolve, reject) => {
      const onMsg = (m: FromThread) => {
        if (m.t === 'ready') resolve();
        else if (m.t === 'loadFailed') reject(new Error(`cannot load model ${path}: ${m.message}`));
        else return;
        worker.off('message', onMsg);
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
      worker.once('exit', (code) => reject(new ThreadDied(`inference thread exited with code ${code} while loading`)));
    });
    const handle = new InferenceThread(worker);
    worker.postMessage({ t: 'load', path, intraOpThreads, nice, ...(faults ? { faults } : {}) } satisfies ToThread);
    try {
      await ready;
    } catch (e) {
      await handle.terminate();
      throw e;
    }
    return handle;
  }

  /**
   * Runs one batch, after the ones handed over before it, or (`urgent`) after
   * the one running and any urgent ones before it; rejects when the run
   * throws or the thread dies.
   */
  run(batchId: number, inputs: Record<string, ThreadTensor>, urgent = false): Promise<RunOutput> {
    return this.hold(batchId, () => {
      const transfer = Object.values(inputs).map((t) => t.buffer);
      this.worker.postMessage({ t: 'run', batchId, inputs, ...(urgent ? { urgent } : {}) } satisfies ToThread, transfer);
    });
  }

  /** Chaos: inject a fault into the thread. */
  inject(fault: ThreadFault): void {
    if (!this.dead) this.worker.postMessage({ t: 'fault', fault } satisfies ToThread);
  }

  /**
   * Kills the thread now, even in the middle of a run: for a run that hangs.
   * A native run that returns into a terminated thread aborts the process
   * (onnxruntime-node throws a C++ exception there), so anything else uses
   * {@link stop}.
   */
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }

  /**
   * Lets the run in progress end (its result is still delivered), drops the
   * runs staged behind it (they reject), and ends the thread; kills it if it
   * has not ended within `graceMs`.
   */
  async stop(graceMs: number): Promise<void> {
    if (this.dead) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ t: 'stop' } satisfies ToThread);
    if (!(await RunnerBase.within(exited, graceMs))) await this.worker.terminate();
  }

  get threadId(): number {
    return this.worker.threadId;
  }

  private onMessage(m: FromThread): void {
    if (m.t === 'done') {
      // The run's output is the message less its routing: outputs, inferMs, and next and spent when sent.
      const { t: _t, batchId, ...output } = m;
      this.settle(batchId, output);
    } else if (m.t === 'failed') this.settle(m.batchId, new Error(m.message));
  }
}
