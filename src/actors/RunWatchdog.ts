/**
 * The hung-run watchdog of a worker: fires once a run has had `limitMs` of
 * this process's time without ending.
 *
 * Time counts only while the node itself runs. A whole process that is
 * stopped (SIGSTOP, a frozen container, a paused VM) gives its inference
 * thread no time either; a wall-clock timer would fire the moment it resumes
 * and kill a healthy worker, and the batch it ran would be blamed for a
 * crash. So the watchdog checks every `periodMs` and counts at most two
 * periods for one check, however late it comes.
 *
 * Cheap on the hot path: `arm` at each run start only resets a counter; the
 * interval starts with the first run after a quiet spell and stops itself at
 * the first check after `disarm`.
 */
import { performance } from 'node:perf_hooks';

export interface RunWatchdogOptions {
  limitMs: number;
  /** Default limitMs / 10, between 10 and 1000 ms. */
  periodMs?: number;
  /** Monotonic clock, ms; tests pass their own. */
  now?: () => number;
}

export class RunWatchdog {
  private readonly limitMs: number;
  private readonly periodMs: number;
  private readonly now: () => number;
  private timer: ReturnType<typeof setInterval> | undefined;
  private onExpire: (() => void) | undefined;
  private counted = 0;
  private lastAt = 0;

  constructor(o: RunWatchdogOptions) {
    this.limitMs = o.limitMs;
    this.periodMs = o.periodMs ?? Math.min(1000, Math.max(10, o.limitMs / 10));
    this.now = o.now ?? (() => performance.now());
  }

  /** A run starts (or the next one takes over): it gets a full `limitMs`, then `onExpire` is called. */
  arm(onExpire: () => void): void {
    this.onExpire = onExpire;
    this.counted = 0;
    this.lastAt = this.now();
    if (this.timer === undefined) {
      this.timer = setInterval(() => this.check(), this.periodMs);
      this.timer.unref();
    }
  }

  /** No run is in progress. */
  disarm(): void {
    this.onExpire = undefined;
  }

  private check(): void {
    const onExpire = this.onExpire;
    if (onExpire === undefined) {
      clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const now = this.now();
    this.counted += Math.min(now - this.lastAt, 2 * this.periodMs);
    this.lastAt = now;
    if (this.counted < this.limitMs) return;
    this.disarm();
    onExpire();
  }
}
