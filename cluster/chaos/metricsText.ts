/**
 * Just enough of the Prometheus text format to read a node's /metrics in the
 * chaos suite: samples with their labels, counters summed over a label
 * filter, and histograms (cumulative buckets, sum, count) with the
 * difference between two scrapes.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** Parses the samples of a text exposition; comments and malformed lines are skipped. */
export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    if (!Number.isNaN(value)) out.push({ name: m[1]!, labels, value });
  }
  return out;
}

const matches = (labels: Record<string, string>, filter: Record<string, string>) =>
  Object.entries(filter).every(([k, v]) => labels[k] === v);

/** Sum of the samples named `name` whose labels include `filter`. */
export function counterValue(samples: readonly Sample[], name: string, filter: Record<string, string> = {}): number {
  let n = 0;
  for (const s of samples) if (s.name === name && matches(s.labels, filter)) n += s.value;
  return n;
}

export interface Histogram {
  /** Cumulative counts by upper bound in seconds (Infinity last). */
  buckets: { le: number; count: number }[];
  sum: number;
  count: number;
}

/** The histogram `name` (summed over series matching `filter`). */
export function histogramOf(samples: readonly Sample[], name: string, filter: Record<string, string> = {}): Histogram {
  const byLe = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !matches(s.labels, filter)) continue;
    const le = s.labels['le'] === '+Inf' ? Infinity : Number(s.labels['le']);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return {
    buckets: [...byLe].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count })),
    sum: counterValue(samples, `${name}_sum`, filter),
    count: counterValue(samples, `${name}_count`, filter),
  };
}

/** after − before, bucket by bucket (what happened between two scrapes). */
export function histogramDelta(after: Histogram, before: Histogram): Histogram {
  const prev = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (prev.get(b.le) ?? 0) })),
    sum: after.sum - before.sum,
    count: after.count - before.count,
  };
}

/** Upper bound (seconds) of the bucket holding the q-quantile; undefined when empty. */
export function histogramQuantileBound(h: Histogram, q: number): number | undefined {
  if (h.count <= 0) return undefined;
  const rank = Math.max(1, Math.ceil(q * h.count));
  return h.buckets.find((b) => b.count >= rank)?.le;
}
