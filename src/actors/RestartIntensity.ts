/**
 * OTP-style restart intensity: at most `maxRestarts` in `periodMs` (sliding
 * window, monotonic clock), with exponential backoff between restarts.
 * Pure data and functions: the supervising actor asks, then acts.
 */
export interface RestartPolicy {
  /** Default 5. */
  maxRestarts: number;
  /** Default 10 000 ms. */
  periodMs: number;
  /** First backoff; doubles per restart inside the window. Default 10 ms. */
  backoffMs: number;
  /** Default 2 000 ms. */
  maxBackoffMs: number;
}

export const defaultRestartPolicy: RestartPolicy = { maxRestarts: 5, periodMs: 10_000, backoffMs: 10, maxBackoffMs: 2_000 };

/** @throws RangeError when a field is negative or not finite, or maxRestarts is not an integer. */
export function checkRestartPolicy(p: RestartPolicy): RestartPolicy {
  if (!Number.isInteger(p.maxRestarts) || p.maxRestarts < 0) throw new RangeError(`maxRestarts must be an integer ≥ 0, got ${p.maxRestarts}`);
  for (const k of ['periodMs', 'backoffMs', 'maxBackoffMs'] as const) {
    if (!Number.isFinite(p[k]) || p[k] < 0) throw new RangeError(`${k} must be a finite number ≥ 0, got ${p[k]}`);
  }
  return p;
}

export type RestartDecision = { t: 'restart'; afterMs: number } | { t: 'giveUp' };

/**
 * Records a crash at `now` in `history` (restart times, updated in place)
 * and decides: restart after a backoff, or give up (intensity exceeded).
 */
export function onCrash(policy: RestartPolicy, history: number[], now: number): RestartDecision {
  while (history.length > 0 && history[0]! <= now - policy.periodMs) history.shift();
  if (history.length >= policy.maxRestarts) return { t: 'giveUp' };
  const afterMs = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** history.length);
  history.push(now);
  return { t: 'restart', afterMs };
}
