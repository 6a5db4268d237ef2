/**
 * Phi-accrual failure detector (Hayashibara et al.), in the form Akka uses:
 * phi = -log10(P(a heartbeat is still to come after this long)), with the
 * inter-arrival times modelled as a normal distribution over a sliding
 * window. Every frame from a peer counts as a heartbeat, so a busy link never
 * starves the detector.
 */
export interface PhiOptions {
  /** Default 8 (Akka's default). */
  threshold: number;
  /** Inter-arrival samples kept. Default 200. */
  windowSize: number;
  /** Floor on the standard deviation, so a very regular peer is not judged on noise. Default 200 ms. */
  minStdDevMs: number;
  /** Pause tolerated on top of the mean interval (GC, a busy loop). Default 800 ms. */
  acceptablePauseMs: number;
  /** Interval assumed before real samples exist. Default 200 ms. */
  firstIntervalMs: number;
}

export const defaultPhiOptions: PhiOptions = {
  threshold: 8,
  windowSize: 200,
  minStdDevMs: 200,
  acceptablePauseMs: 800,
  firstIntervalMs: 200,
};

export class PhiAccrual {
  private readonly intervals: number[] = [];
  private sum = 0;
  private sumSq = 0;
  private last: number | undefined;

  constructor(private readonly o: PhiOptions = defaultPhiOptions) {
    // Seed with a plausible interval (±σ), as Akka does, so the first judgement is sane.
    const m = o.firstIntervalMs;
    this.add(m - m / 4);
    this.add(m + m / 4);
  }

  heartbeat(now: number): void {
    if (this.last !== undefined) {
      const dt = now - this.last;
      // Frames can arrive in bursts; very short gaps would shrink σ and make the detector twitchy.
      if (dt >= 1) this.add(dt);
    }
    this.last = now;
  }

  phi(now: number): number {
    if (this.last === undefined) return 0;
    const n = this.intervals.length;
    const mean = this.sum / n;
    const std = Math.max(this.o.minStdDevMs, Math.sqrt(Math.max(0, this.sumSq / n - mean * mean)));
    const y = (now - this.last - (mean + this.o.acceptablePauseMs)) / std;
    const e = Math.exp(-y * (1.5976 + 0.070566 * y * y));
    return y > 0 ? -Math.log10(e / (1 + e)) : -Math.log10(1 - 1 / (1 + e));
  }

  isAvailable(now: number): boolean {
    return this.phi(now) < this.o.threshold;
  }

  private add(dt: number): void {
    this.intervals.push(dt);
    this.sum += dt;
    this.sumSq += dt * dt;
    if (this.intervals.length > this.o.windowSize) {
      const old = this.intervals.shift()!;
      this.sum -= old;
      this.sumSq -= old * old;
    }
  }
}
