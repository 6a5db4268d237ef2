/**
 * The priority mix of an open loop: what share of requests is sent as
 * `high`, `normal` and `low`, and the deterministic order that gives each
 * request its priority.
 */
import { PRIORITIES, type Priority } from '../src/transport/protocol.js';

/** Shares of each priority (non-negative, summing to 1). */
export type PriorityMix = Record<Priority, number>;

/**
 * `"H,N,L"` as shares of high, normal and low; normalised to sum 1, so
 * `1,6,3` is `0.1,0.6,0.3`.
 * @throws RangeError (naming `flag`) unless there are three non-negative numbers with a positive sum.
 */
export function parsePriorityMix(s: string, flag = 'overload-mix'): PriorityMix {
  const parts = s.split(',').map((x) => x.trim());
  const nums = parts.map(Number);
  if (parts.length !== 3 || parts.some((p) => p === '') || nums.some((n) => !Number.isFinite(n) || n < 0)) {
    throw new RangeError(`--${flag} must be three non-negative numbers H,N,L (shares of high, normal, low), got ${JSON.stringify(s)}`);
  }
  const sum = nums[0]! + nums[1]! + nums[2]!;
  if (!(sum > 0)) throw new RangeError(`--${flag} must have a positive share somewhere, got ${JSON.stringify(s)}`);
  return { high: nums[0]! / sum, normal: nums[1]! / sum, low: nums[2]! / sum };
}

/** `0.1,0.6,0.3`: the mix as the command line writes it. */
export const mixText = (m: PriorityMix): string => PRIORITIES.map((p) => Number(m[p].toFixed(4))).join(',');

/**
 * A picker of lanes (indices into PRIORITIES) for requests 1, 2, 3, ...: each
 * request goes to the priority whose count lags its share most, ties to the
 * higher priority. After n requests every count is within one of n × share
 * (the mix is exact over any run, not only on average), and the priorities
 * interleave instead of coming in runs. A priority with share 0 is never picked.
 */
export function priorityPicker(mix: PriorityMix): () => number {
  const shares = PRIORITIES.map((p) => mix[p]);
  const counts = PRIORITIES.map(() => 0);
  let n = 0;
  return () => {
    n++;
    let best = 0;
    let bestDeficit = Number.NEGATIVE_INFINITY;
    for (let l = 0; l < shares.length; l++) {
      const deficit = n * shares[l]! - counts[l]!;
      if (shares[l]! > 0 && deficit > bestDeficit) {
        best = l;
        bestDeficit = deficit;
      }
    }
    counts[best]!++;
    return best;
  };
}
