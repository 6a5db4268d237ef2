/**
 * The dashboard's snapshot: what one node pushes to every browser feed each
 * second, and the pure arithmetic that turns two readings of the node's
 * cumulative Prometheus metrics into per-second rates and quantiles.
 */
import type { Metric, Registry } from 'prom-client';
import type { MemberView } from '../../../actors/Membership.js';

/** Bumped when a field changes meaning; the page ignores snapshots of another version. */
export const SNAPSHOT_VERSION = 1;

export interface MemberSnapshot {
  id: string;
  status: string;
  addr: string;
  linked: boolean;
}

export interface ModelSnapshot {
  model: string;
  /** Replies per second to this node's clients over the window, all codes. */
  rps: number;
  /** The same by outcome code (`ok` for results); codes with no replies in the window are left out. */
  rpsByCode: Record<string, number>;
  /** Latency quantiles over the window in ms, interpolated in histogram buckets; null without replies. */
  p50Ms: number | null;
  p99Ms: number | null;
  /** Waiting in this node's batcher queue, and running on its workers, now. */
  queued: number;
  running: number;
  /** Mean rows per batch run on this node over the window; null when no batch ran. */
  batchMean: number | null;
  /** Worker restarts since the node started. */
  restarts: number;
  /** Error replies since the node started, by code (every code but `ok`). */
  errors: Record<string, number>;
}

export interface DashboardSnapshot {
  t: 'snapshot';
  v: typeof SNAPSHOT_VERSION;
  node: string;
  /** Wall-clock time of the reading, ms since the epoch. */
  time: number;
  /** Length of the window the rates cover; 0 in a feed's first snapshot after the sampler started (no rates yet). */
  windowMs: number;
  ready: boolean;
  /** Sum of `rps` over the models. */
  rps: number;
  members: MemberSnapshot[];
  models: ModelSnapshot[];
}

/** Cumulative counts of one model, as read from the registry. */
export interface ModelTotals {
  requests: Record<string, number>;
  /** Cumulative latency bucket counts aligned with `Totals.latencyBounds`, then the `+Inf` bucket. */
  latency: number[];
  batchSum: number;
  batchCount: number;
  restarts: number;
}

export interface Totals {
  /** Monotonic time of the reading, ms. */
  at: number;
  /** Finite upper bounds of the latency buckets, seconds, ascending. */
  latencyBounds: number[];
  models: Map<string, ModelTotals>;
}

/** One value of a metric as prom-client reports it (histograms name their `_bucket`, `_sum`, `_count` lines). */
interface Sample {
  value: number;
  labels: Partial<Record<string, string | number>>;
  metricName?: string;
}

const emptyModel = (buckets: number): ModelTotals => ({
  requests: {},
  latency: new Array<number>(buckets + 1).fill(0),
  batchSum: 0,
  batchCount: 0,
  restarts: 0,
});

/**
 * Reads the counters the dashboard needs straight from their metric objects,
 * so a reading costs a walk over this node's label sets and no exposition
 * text (the default process metrics are not collected).
 */
export async function readTotals(registry: Registry, at: number): Promise<Totals> {
  const get = async (name: string): Promise<Sample[]> => (await (registry.getSingleMetric(name) as Metric | undefined)?.get())?.values ?? [];
  const [requests, latency, batch, restarts] = await Promise.all([
    get('actorserve_requests_total'),
    get('actorserve_request_duration_seconds'),
    get('actorserve_batch_size'),
    get('actorserve_worker_restarts_total'),
  ]);
  const latencyBounds = [...new Set(latency.filter((v) => v.metricName?.endsWith('_bucket') && v.labels.le !== '+Inf').map((v) => Number(v.labels.le)))].sort((a, b) => a - b);
  const models = new Map<string, ModelTotals>();
  const model = (labels: Partial<Record<string, string | number>>) => {
    const name = String(labels.model ?? '');
    let m = models.get(name);
    if (!m) models.set(name, (m = emptyModel(latencyBounds.length)));
    return m;
  };
  for (const v of requests) {
    const m = model(v.labels);
    const code = String(v.labels.code ?? 'ok');
    m.requests[code] = (m.requests[code] ?? 0) + v.value; // summed over versions
  }
  for (const v of latency) {
    if (!v.metricName?.endsWith('_bucket')) continue;
    const i = v.labels.le === '+Inf' ? latencyBounds.length : latencyBounds.indexOf(Number(v.labels.le));
    if (i >= 0) model(v.labels).latency[i] = v.value;
  }
  for (const v of batch) {
    if (v.metricName?.endsWith('_sum')) model(v.labels).batchSum = v.value;
    else if (v.metricName?.endsWith('_count')) model(v.labels).batchCount = v.value;
  }
  for (const v of restarts) model(v.labels).restarts += v.value;
  return { at, latencyBounds, models };
}

/**
 * The q-quantile of the observations counted in cumulative buckets, the way
 * Prometheus' `histogram_quantile` estimates it: find the bucket holding the
 * rank q·total and interpolate linearly between its lower bound (0 for the
 * first bucket) and its upper bound, as if its observations were spread
 * evenly. A rank in the `+Inf` bucket answers the largest finite bound. So
 * the answer is only as precise as the buckets (e.g. anything in 10–25 ms is
 * placed along that span). Returns null when nothing was counted.
 *
 * @param bounds finite upper bounds, ascending
 * @param cumulative counts per bucket, cumulative, `bounds.length + 1` long (the last is `+Inf`, the total)
 */
export function histogramQuantile(bounds: readonly number[], cumulative: readonly number[], q: number): number | null {
  const total = cumulative[bounds.length] ?? 0;
  if (!(total > 0) || bounds.length === 0) return null;
  const rank = q * total;
  let i = 0;
  while (i < bounds.length && (cumulative[i] ?? 0) < rank) i++;
  if (i === bounds.length) return bounds[bounds.length - 1]!;
  const lower = i === 0 ? 0 : bounds[i - 1]!;
  const before = i === 0 ? 0 : cumulative[i - 1]!;
  const inBucket = cumulative[i]! - before;
  if (inBucket <= 0) return bounds[i]!;
  return lower + (bounds[i]! - lower) * ((rank - before) / inBucket);
}

export interface SnapshotInput {
  node: string;
  time: number;
  ready: boolean;
  members: readonly MemberView[];
  /** Model names this node serves (listed even with no traffic). */
  served: readonly string[];
  queues: Record<string, { queued: number; running: number }>;
  /** The previous reading; absent for the first, which then carries no rates. */
  prev: Totals | undefined;
  cur: Totals;
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

/** One snapshot from two readings of the cumulative totals (rates are the deltas over the time between them). */
export function buildSnapshot(i: SnapshotInput): DashboardSnapshot {
  const windowMs = i.prev ? Math.max(0, i.cur.at - i.prev.at) : 0;
  const perSecond = windowMs > 0 ? 1000 / windowMs : 0;
  const names = [...new Set([...i.served, ...Object.keys(i.queues), ...i.cur.models.keys()])].filter((n) => n !== '').sort();
  const buckets = i.cur.latencyBounds.length;
  const models = names.map((model): ModelSnapshot => {
    const cur = i.cur.models.get(model) ?? emptyModel(buckets);
    const prev = i.prev?.models.get(model) ?? emptyModel(buckets);
    const rpsByCode: Record<string, number> = {};
    const errors: Record<string, number> = {};
    let rps = 0;
    for (const [code, n] of Object.entries(cur.requests)) {
      if (code !== 'ok' && n > 0) errors[code] = n;
      if (!i.prev) continue;
      // Counters never go down within a process; the clamp only guards a registry reset.
      const r = Math.max(0, n - (prev.requests[code] ?? 0)) * perSecond;
      if (r > 0) {
        rpsByCode[code] = round(r);
        rps += r;
      }
    }
    let p50Ms: number | null = null;
    let p99Ms: number | null = null;
    let batchMean: number | null = null;
    if (i.prev && i.prev.latencyBounds.length === buckets) {
      const delta = cur.latency.map((n, k) => Math.max(0, n - (prev.latency[k] ?? 0)));
      const p50 = histogramQuantile(i.cur.latencyBounds, delta, 0.5);
      const p99 = histogramQuantile(i.cur.latencyBounds, delta, 0.99);
      p50Ms = p50 === null ? null : round(p50 * 1000);
      p99Ms = p99 === null ? null : round(p99 * 1000);
    }
    if (i.prev) {
      const runs = cur.batchCount - prev.batchCount;
      if (runs > 0) batchMean = round((cur.batchSum - prev.batchSum) / runs, 2);
    }
    const q = i.queues[model] ?? { queued: 0, running: 0 };
    return { model, rps: round(rps), rpsByCode, p50Ms, p99Ms, queued: q.queued, running: q.running, batchMean, restarts: cur.restarts, errors };
  });
  return {
    t: 'snapshot',
    v: SNAPSHOT_VERSION,
    node: i.node,
    time: i.time,
    windowMs: Math.round(windowMs),
    ready: i.ready,
    rps: round(models.reduce((s, m) => s + m.rps, 0)),
    members: i.members.map((m) => ({ id: m.nodeId, status: m.status, addr: m.addr, linked: m.linked })),
    models,
  };
}
