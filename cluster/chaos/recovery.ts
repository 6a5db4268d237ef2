/**
 * Recovery time from a throughput series, as pure functions over arrival
 * times (tested in test/chaos/recovery.test.ts).
 *
 * Results are counted per 100 ms bucket. The baseline is the mean raw
 * throughput over the window before the fault. The series is smoothed with
 * a centred median over `smoothBuckets` buckets (default 5: ±200 ms): a
 * single slow bucket followed by its catch-up (a GC pause somewhere on a
 * busy machine) is not an outage, while anything lasting 300 ms or more
 * shows, with none of the lag a trailing mean adds to a recovery. Then, for
 * an event (the fault, or a heal):
 *
 * - the dip: the first smoothed bucket below `threshold` × baseline
 *   (default 0.9) within `dipSearchMs` after the event (default 2 000 ms;
 *   the faults here show at once, as requests pile up where they cannot be
 *   served). No dip: recovery 0.
 * - recovery: from the event to the start of the first run of
 *   `sustainBuckets` (default 5) smoothed buckets at or above the threshold
 *   after the dip; a return that does not last 500 ms is not recovery yet.
 *   None before the segment ends (the next event, or the end of the load):
 *   null, not recovered.
 */

export interface Series {
  /** performance.now() of the start of bucket 0. */
  t0: number;
  bucketMs: number;
  counts: number[];
}

/** Counts `times` (performance.now() values) into buckets from t0 to t1. */
export function bucketize(times: readonly number[], t0: number, t1: number, bucketMs = 100): Series {
  if (!(bucketMs > 0)) throw new RangeError(`bucketMs must be > 0, got ${bucketMs}`);
  const counts = new Array<number>(Math.max(0, Math.ceil((t1 - t0) / bucketMs))).fill(0);
  for (const t of times) {
    const i = Math.floor((t - t0) / bucketMs);
    if (i >= 0 && i < counts.length) counts[i]!++;
  }
  return { t0, bucketMs, counts };
}

/** Mean per-second rate over the buckets lying wholly inside [from, to); 0 when there are none. */
export function ratePerSec(s: Series, from: number, to: number): number {
  const first = Math.max(0, Math.ceil((from - s.t0) / s.bucketMs));
  const last = Math.min(s.counts.length, Math.floor((to - s.t0) / s.bucketMs));
  if (last <= first) return 0;
  let n = 0;
  for (let i = first; i < last; i++) n += s.counts[i]!;
  return (n / (last - first)) * (1000 / s.bucketMs);
}

/** Centred moving median over `k` buckets (fewer at the edges; the upper middle of an even count). */
export function smooth(counts: readonly number[], k: number): number[] {
  const half = Math.floor(k / 2);
  return counts.map((_, i) => {
    const w = counts.slice(Math.max(0, i - half), Math.min(counts.length, i + half + 1)).sort((a, b) => a - b);
    return w[Math.floor(w.length / 2)]!;
  });
}

export interface RecoveryOptions {
  /** Start of the pre-fault window the baseline is taken over. */
  baselineFrom: number;
  /** The fault (the baseline window ends here). */
  faultAt: number;
  /** The event recovery is measured from (the fault, or a heal). */
  eventAt: number;
  /** The end of the event's segment: the next event, or the end of the load. */
  segmentEnd: number;
  /** Default 0.9. */
  threshold?: number;
  /** Default 5. */
  smoothBuckets?: number;
  /** Default 2 000 ms. */
  dipSearchMs?: number;
  /** Default 5. */
  sustainBuckets?: number;
}

/** Milliseconds from the event until throughput is back to threshold × baseline; 0 without a dip; null if not back within the segment. */
export function recoveryMs(s: Series, o: RecoveryOptions): number | null {
  const threshold = o.threshold ?? 0.9;
  const sustain = o.sustainBuckets ?? 5;
  const baseline = (ratePerSec(s, o.baselineFrom, o.faultAt) * s.bucketMs) / 1000;
  if (baseline <= 0) return null;
  const m = smooth(s.counts, o.smoothBuckets ?? 5);
  const first = Math.max(0, Math.floor((o.eventAt - s.t0) / s.bucketMs));
  const last = Math.min(s.counts.length, Math.floor((o.segmentEnd - s.t0) / s.bucketMs));
  const searchEnd = Math.min(last, Math.ceil((o.eventAt + (o.dipSearchMs ?? 2_000) - s.t0) / s.bucketMs));
  const low = (i: number) => m[i]! < threshold * baseline;
  let dip = -1;
  for (let i = first; i < searchEnd; i++) {
    if (low(i)) {
      dip = i;
      break;
    }
  }
  if (dip < 0) return 0;
  let run = 0;
  for (let i = dip + 1; i < last; i++) {
    run = low(i) ? 0 : run + 1;
    if (run === sustain) return Math.max(0, s.t0 + (i - sustain + 1) * s.bucketMs - o.eventAt);
  }
  return null;
}

/** The q-quantile (0..1) of `values` by nearest rank; undefined when empty. */
export function quantile(values: readonly number[], q: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}
