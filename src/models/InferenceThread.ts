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
}

export class ThreadDied extends Error {
  readonly code = 'thread_died';
}

export class InferenceThread {
  private readonly worker: Worker;
  private pending: { batchId: number; resolve: (r: RunOutput) => void; reject: (e: Error) => void } | undefined;
  private dead: Error | undefined;
  private readonly deathListeners: ((e: Error) => void)[] = [];

  private constructor(worker: Worker) {
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

  /** Runs one batch; rejects when the run throws or the thread dies. */
  run(batchId: number, inputs: Record<string, ThreadTensor>): Promise<RunOutput> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.pending) return Promise.reject(new Error('inference thread is busy'));
    return new Promise<RunOutput>((resolve, reject) => {
      this.pending = { batchId, resolve, reject };
      const transfer = Object.values(inputs).map((t) => t.buffer);
      this.worker.postMessage({ t: 'run', batchId, inputs } satisfies ToThread, transfer);
    });
  }

  onDeath(listener: (e: Error) => void): void {
    this.deathListeners.push(listener);
  }

  /** Chaos: inject a fault into the thread. */
  inject(fault: ThreadFault): void {
    if (!this.dead) this.worker.postMessage({ t: 'fault', fault } satisfies ToThread);
  }

  /** Test and chaos hook: the thread exits as if it had crashed natively. */
  async terminate(): Promise<void> {
    await this.worker.terminate();
  }

  get threadId(): number {
    return this.worker.threadId;
  }

  private onMessage(m: FromThread): void {
    const p = this.pending;
    if (m.t === 'done' && p?.batchId === m.batchId) {
      this.pending = undefined;
      p.resolve({ outputs: m.outputs, inferMs: m.inferMs });
    } else if (m.t === 'failed' && p?.batchId === m.batchId) {
      this.pending = undefined;
      p.reject(new Error(m.message));
    }
  }

  private die(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    const p = this.pending;
    this.pending = undefined;
    p?.reject(e);
    for (const l of this.deathListeners) l(e);
  }
}
