/**
 * The shell that runs a Supervisor (pure OTP logic) over live children:
 * it feeds exits and timers to `supervisorTransition` on the monotonic clock
 * and turns the effects into decisions the children's crash handlers wait
 * for (restart, or stop for good), stops of siblings the strategy names,
 * backoff timers, and escalation to the parent.
 */
import { performance } from 'node:perf_hooks';
import {
  initialSupervisorState,
  supervisorTransition,
  type ExitReason,
  type SupervisorSpec,
  type SupervisorState,
} from './Supervisor.js';

export type Decision = 'restart' | 'stop';

export interface SupervisedChild {
  /** The supervisor stops this running child as part of a sibling's restart (one_for_all, rest_for_one). */
  stopForRestart(): void;
}

/** Supervision settings of a model (its workers are the children). */
export interface SupervisionSettings {
  strategy: SupervisorSpec['strategy'];
  /** Restarts allowed within periodMs; one more and the model gives up. */
  intensity: number;
  periodMs: number;
  backoff: { initialMs: number; maxMs: number; factor: number };
}

/** Default: one_for_one, 5 restarts in 10 s, backoff 10 ms doubling to 2 s. */
export const defaultSupervision: SupervisionSettings = {
  strategy: 'one_for_one',
  intensity: 5,
  periodMs: 10_000,
  backoff: { initialMs: 10, maxMs: 2_000, factor: 2 },
};

export class Supervision {
  private readonly state: SupervisorState;
  private readonly children = new Map<string, SupervisedChild>();
  private readonly decided = new Map<string, Decision>();
  private readonly waiting = new Map<string, (d: Decision) => void>();
  /** Children the supervisor itself stopped: their exit is not a crash. */
  private readonly stoppedBySupervisor = new Set<string>();
  private readonly gens = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  /** @throws RangeError or TypeError for bad settings (checked when built). */
  constructor(ids: readonly string[], settings: SupervisionSettings, private readonly onEscalate: (child: string) => void) {
    this.state = initialSupervisorState({
      strategy: settings.strategy,
      intensity: settings.intensity,
      periodMs: settings.periodMs,
      backoff: settings.backoff,
      children: ids.map((id) => ({ id, restart: 'permanent' as const })),
    });
    this.apply({ t: 'start' });
  }

  register(id: string, child: SupervisedChild): void {
    this.children.set(id, child);
  }

  /** The supervisor is taking this child down itself (a sibling's restart, or giving up). */
  isStopping(id: string): boolean {
    return this.stoppedBySupervisor.has(id);
  }

  /** The generation of the child's current incarnation. */
  gen(id: string): number {
    return this.gens.get(id) ?? 0;
  }

  /**
   * A child's process ended; resolves when the supervisor has decided what
   * becomes of it (after any backoff).
   */
  exited(id: string, gen: number, reason: ExitReason = 'crash'): Promise<Decision> {
    if (this.closed) return Promise.resolve('stop');
    // A sibling we stopped ourselves is restarted by the effect that stopped it, not by its exit.
    if (!this.stoppedBySupervisor.delete(id)) this.apply({ t: 'exit', child: id, reason, gen });
    const d = this.decided.get(id);
    if (d) {
      this.decided.delete(id);
      return Promise.resolve(d);
    }
    return new Promise((resolve) => this.waiting.set(id, resolve));
  }

  /** Stops deciding: every waiting child is told to stop (node shutdown). */
  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    for (const [id, resolve] of this.waiting) {
      this.waiting.delete(id);
      resolve('stop');
    }
  }

  private decide(id: string, d: Decision): void {
    const resolve = this.waiting.get(id);
    if (resolve) {
      this.waiting.delete(id);
      resolve(d);
    } else {
      this.decided.set(id, d);
    }
  }

  private apply(msg: Parameters<typeof supervisorTransition>[1]): void {
    const now = performance.now();
    for (const fx of supervisorTransition(this.state, msg, now)) {
      switch (fx.t) {
        case 'startChild':
          // The first start is the spawn itself; later ones release a waiting crash handler.
          if (this.gens.has(fx.id)) this.decide(fx.id, 'restart');
          this.gens.set(fx.id, fx.gen);
          break;
        case 'stopChild':
          this.stoppedBySupervisor.add(fx.id);
          this.children.get(fx.id)?.stopForRestart();
          break;
        case 'schedule':
          clearTimeout(this.timer);
          this.timer = setTimeout(() => this.apply({ t: 'timer' }), Math.max(0, fx.atMs - performance.now()));
          this.timer.unref();
          break;
        case 'removeChild':
          this.decide(fx.id, 'stop');
          break;
        case 'escalate':
          for (const id of this.gens.keys()) this.decide(id, 'stop');
          this.onEscalate(fx.child);
          break;
      }
    }
  }
}
