/**
 * Latency histograms: HDR (hdr-histogram-js) in microseconds, 3 significant
 * digits, so a generator records a value in a few hundred ns and histograms
 * from several generator processes merge exactly.
 */
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, type Histogram } from 'hdr-histogram-js';

/** Percentiles in milliseconds; all zero when nothing was recorded. */
export interface LatencySummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Highest value tracked without resizing: 10 minutes, in µs. */
const HIGHEST_US = 600_000_000;

export function newHistogram(): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3 });
}

/** Records a latency given in ms (clamped to [1 µs, 10 min]). */
export function recordMs(h: Histogram, ms: number): void {
  const us = Math.round(ms * 1000);
  h.recordValue(us < 1 ? 1 : us > HIGHEST_US ? HIGHEST_US : us);
}

export const encodeHistogram = (h: Histogram): string => encodeIntoCompressedBase64(h);

export function decodeHistogram(s: string): Histogram {
  const h = newHistogram();
  if (s !== '') h.add(decodeFromCompressedBase64(s));
  return h;
}

/** Adds encoded histograms into one. */
export function mergeHistograms(encoded: readonly string[]): Histogram {
  const h = newHistogram();
  for (const s of encoded) if (s !== '') h.add(decodeFromCompressedBase64(s));
  return h;
}

const round3 = (x: number): number => Math.round(x * 1000) / 1000;

export function summarize(h: Histogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0 };
  const ms = (us: number) => round3(us / 1000);
  return {
    count: h.totalCount,
    p50: ms(h.getValueAtPercentile(50)),
    p90: ms(h.getValueAtPercentile(90)),
    p99: ms(h.getValueAtPercentile(99)),
    p999: ms(h.getValueAtPercentile(99.9)),
    max: ms(h.maxValue),
    mean: ms(h.mean),
  };
}
