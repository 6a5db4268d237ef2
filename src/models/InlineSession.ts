/**
 * A model run on the node's own thread instead of a worker_thread, for
 * models whose batches take microseconds. Handing a batch to a thread and
 * its result back costs more than such a run: measured on one node serving
 * iris at 6,000 req/s (~8 rows per batch, ~25 µs per run), the inference
 * thread spent ~230 µs of CPU per batch, nearly all of it waking up and
 * passing messages; inline the node spent 64 instead of 96 µs of CPU per
 * request. A run blocks the event loop for its length, so a model whose
 * batches take milliseconds stays on a thread (ModelSpec `execution`).
 *
 * Same contract as InferenceThread: runs one at a time, an urgent one
 * first after a run, each result naming the run started next; the same
 * faults can be injected. A native run that hangs here could not be
 * killed, so `hangNext` is a run that never starts, ended (like a hung
 * thread) by terminate().
 */
import type * as ort from 'onnxruntime-node';
import { RunnerBase, ThreadDied, type ModelRunner, type RunOutput } from './InferenceThread.js';
import { createSession, poisoned, runSession, takeNext, turn, type SessionRun } from './onnxSession.js';
import type { ThreadFault, ThreadFaults, ThreadTensor } from './threadProtocol.js';

interface Run {
  batchId: number;
  inputs: Record<string, ThreadTensor>;
  urgent: boolean;
}

export class InlineSession extends RunnerBase implements ModelRunner {
  readonly threadId = 0;
  /** Runs handed over and not yet started, in the order they came. */
  private readonly queue: Run[] = [];
  private pumping = false;
  private stopping = false;
  private nextFault: 'throwNext' | 'hangNext' | undefined;
  private onDead!: () => void;
  private readonly died = new Promise<void>((resolve) => (this.onDead = resolve));

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly faults: ThreadFaults,
  ) {
    super();
  }

  /** @throws Error when the model cannot be loaded. */
  static async start(path: string, intraOpThreads: number, faults: ThreadFaults = {}): Promise<InlineSession> {
    try {
      return new InlineSession(await createSession(path, intraOpThreads), faults);
    } catch (e) {
      throw new Error(`cannot load model ${path}: ${(e as Error).message}`);
    }
  }

  run(batchId: number, inputs: Record<string, ThreadTensor>, urgent = false): Promise<RunOutput> {
    return this.hold(batchId, () => {
      this.queue.push({ batchId, inputs, urgent });
      void this.pump();
    });
  }

  inject(fault: ThreadFault): void {
    if (this.dead) return;
    if (fault === 'exit') this.die(new ThreadDied('inline inference exited (fault injection)'));
    else this.nextFault = fault;
  }

  /** Ends the session now, a run hung by fault injection included; runs not answered reject. */
  async terminate(): Promise<void> {
    this.die(new ThreadDied('inline inference terminated'));
  }

  /** Lets the run in progress end (its result is still delivered), drops the ones queued behind it, and ends the session. */
  async stop(graceMs: number): Promise<void> {
    if (this.dead) return;
    this.stopping = true;
    if (!this.pumping) return this.die(new ThreadDied('inline inference stopped'));
    await RunnerBase.within(this.died, graceMs);
    this.die(new ThreadDied('inline inference stopped'));
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    // A microtask, not a turn: onnxruntime starts the run itself in the next check phase, after the caller's
    // synchronous work. From idle the first run to arrive starts, as on a thread: the owner, told no `next`,
    // counts on that order.
    await Promise.resolve();
    let run = this.stopping || this.dead ? undefined : this.queue.shift();
    while (run) {
      const done = await this.runOne(run);
      if (this.dead) break;
      if (done === undefined) {
        // A run that failed ends the session, as it ends a thread: the worker restarts it.
        this.die(new ThreadDied('inline inference ended after a failed run'));
        break;
      }
      // With runs waiting, I/O gets a turn first (an urgent run may arrive in it); with none, the result goes now.
      if (this.queue.length > 0) await turn();
      if (this.dead) break;
      const next = this.stopping ? undefined : takeNext(this.queue);
      this.settle(run.batchId, { outputs: done.outputs, inferMs: done.inferMs, spent: done.spent, ...(next ? { next: next.batchId } : {}) });
      run = next;
    }
    this.pumping = false;
    if (this.stopping) this.die(new ThreadDied('inline inference stopped'));
  }

  /** Runs one batch; undefined when it failed (its caller is answered here) or hung until the session died. */
  private async runOne(run: Run): Promise<SessionRun | undefined> {
    try {
      if (poisoned(this.faults, run.inputs)) throw new Error('poisoned input (fault injection)');
      const fault = this.nextFault;
      this.nextFault = undefined;
      if (fault === 'throwNext') throw new Error('injected worker crash (chaos)');
      if (fault === 'hangNext') {
        await this.died;
        return undefined;
      }
      return await runSession(this.session, run.inputs);
    } catch (e) {
      this.settle(run.batchId, e instanceof Error ? e : new Error(String(e)));
      return undefined;
    }
  }

  protected override ended(): void {
    this.queue.length = 0;
    this.onDead();
  }
}
