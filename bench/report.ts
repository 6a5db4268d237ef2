/**
 * Writes one run's report into a folder: `results.json` (everything),
 * `summary.md` (the tables) and SVG charts. A pure function of
 * {@link BenchResults} plus file writes, so tests can feed it a small run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CeilingPoint } from './ceiling.js';
import { PRIORITIES } from '../src/transport/protocol.js';
import type { BenchResults, ModelResults, OverloadedAnswers, OverloadResults, PhaseResult } from './results.js';
import { barChart, lineChart, type BarGroup, type Marker, type Series } from './svg.js';

export interface WrittenReport {
  dir: string;
  files: string[];
}

/** Writes results.json, summary.md and the charts into `dir` (created if needed). */
export function writeReport(results: BenchResults, dir: string): WrittenReport {
  mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  const put = (name: string, text: string) => {
    writeFileSync(join(dir, name), text);
    files.push(name);
  };
  put('results.json', `${JSON.stringify(results, null, 2)}\n`);
  const charts = renderCharts(results);
  for (const [name, svg] of Object.entries(charts)) put(name, svg);
  put('summary.md', renderSummary(results, Object.keys(charts)));
  return { dir, files };
}

// ---------------------------------------------------------------- formatting

/** How open-loop latency is timed (bench/loadgen.ts, SEND_AHEAD_MS): said once for both sections that print it. */
const LATENCY_FROM = 'counted from the scheduled send time (no coordinated omission), or from the actual send for a request the generator sent up to 1 ms ahead of it (the granularity of its timer)';

export function num(n: number | null | undefined, digits = 0): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A ratio with 2 significant digits and a ×: 0.0061×, 1.1×, 12×. */
export function ratio(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return 'n/a';
  return `${Number(n.toPrecision(2))}×`;
}

const errorsText = (p: PhaseResult | null): string => {
  if (p === null) return 'n/a';
  const parts = Object.entries(p.errors).map(([k, v]) => `${k} ${v}`);
  if (p.unanswered > 0) parts.push(`unanswered ${p.unanswered}`);
  return parts.join(', ') || 'none';
};

const ms = (p: PhaseResult | null, k: 'p50' | 'p99' | 'p999' | 'max'): string => (p === null || p.latencyMs.count === 0 ? 'n/a' : num(p.latencyMs[k], 2));

/** Other processes took more than this share of a core during a phase: its figures are suspect. */
export const DISTURBED_OTHERS_PCT = 50;
const disturbed = (p: PhaseResult | null): boolean => (p?.machine.othersPct ?? 0) > DISTURBED_OTHERS_PCT;
const flag = (p: PhaseResult | null): string => (disturbed(p) ? ' ⚠' : '');

const ceilingLabel = (c: CeilingPoint, threads: number) => `batch ${c.batch}, ${threads} intra-op thread${threads === 1 ? '' : 's'}`;

// ---------------------------------------------------------------- summary.md

export function renderSummary(r: BenchResults, charts: readonly string[] = []): string {
  const out: string[] = [];
  const m = r.machine;
  out.push(`# actorserve bench — ${r.startedAt}`);
  out.push('');
  out.push(`\`${r.commandLine}\``);
  out.push('');
  out.push(
    `Node ${m.node} on ${m.platform}/${m.arch}, ${m.cpus} × ${m.cpuModel}, ${num(m.totalMemGiB, 1)} GiB; ` +
      `onnxruntime-node ${m.onnxruntime}; load average ${m.loadAverageAtStart.map((x) => x.toFixed(2)).join(' ')} at start, ` +
      `${m.loadAverageAtEnd.map((x) => x.toFixed(2)).join(' ')} at the end. The node, the baselines and the load generator share these CPUs: ` +
      'compare figures of one run with each other (ratios), not across machines or runs.',
  );
  out.push('');

  out.push('## actorserve vs the in-process ceiling vs a plain HTTP server');
  out.push('');
  out.push('Closed loop, the same number of requests in flight for both servers, one request = one row. Ceiling rows: rows/s of back-to-back ' +
    '`session.run` on one thread with the node\'s settings, and the time of one run.');
  out.push('');
  out.push('| model | system | throughput /s | p50 ms | p99 ms | p99.9 ms | ÷ ceiling (best) | ÷ plain HTTP | errors |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---|');
  for (const mr of r.models) {
    const c = mr.ceiling;
    if (c !== null) {
      out.push(`| ${mr.model} | in-process ceiling, best (${ceilingLabel(c.best, c.intraOpThreads)}) | ${num(c.best.itemsPerSec)} | ${num(c.best.runMs.p50, 3)} | ${num(c.best.runMs.p99, 3)} | ${num(c.best.runMs.p999, 3)} | 1× | | |`);
      if (c.batch1 !== null && c.batch1 !== c.best) {
        out.push(`| ${mr.model} | in-process, ${ceilingLabel(c.batch1, c.intraOpThreads)} | ${num(c.batch1.itemsPerSec)} | ${num(c.batch1.runMs.p50, 3)} | ${num(c.batch1.runMs.p99, 3)} | ${num(c.batch1.runMs.p999, 3)} | ${ratio(c.batch1.itemsPerSec / c.best.itemsPerSec)} | | |`);
      }
    }
    const row = (name: string, p: PhaseResult | null, vsPlain: string) => {
      if (p === null) return;
      out.push(`| ${mr.model} | ${name}, ${p.concurrency} in flight${flag(p)} | ${num(p.throughput)} | ${ms(p, 'p50')} | ${ms(p, 'p99')} | ${ms(p, 'p999')} | ` +
        `${c ? ratio(p.throughput / c.best.itemsPerSec) : 'n/a'} | ${vsPlain} | ${errorsText(p)} |`);
    };
    row('plain HTTP server (JSON, 1 run per request)', mr.plain.closed, mr.plain.closed ? '1×' : 'n/a');
    row(`actorserve, 1 node (WebSocket, ${mr.actorserve.closed?.connections ?? '?'} conn.)`, mr.actorserve.closed, ratio(mr.ratios.throughputVsPlain));
  }
  out.push('');
  for (const mr of r.models) {
    const q = mr.ratios;
    out.push(`- **${mr.model}**: actorserve ÷ plain HTTP: throughput ${ratio(q.throughputVsPlain)}, p50 ${ratio(q.p50VsPlain)}, p99 ${ratio(q.p99VsPlain)} ` +
      `(latency below 1× = actorserve faster); actorserve ÷ in-process ceiling: ${ratio(q.throughputVsCeilingBest)} of the best batch, ` +
      `${ratio(q.throughputVsCeilingBatch1)} of batch 1; plain ÷ batch-1 ceiling: ${ratio(q.plainThroughputVsCeilingBatch1)}.`);
  }
  out.push('');

  out.push('## Under load (closed loop)');
  out.push('');
  out.push('| model | system | server CPU % | server CPU µs / request | max event-loop delay ms | mean batch | generator CPU % | generator loop max ms | other processes CPU % |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const mr of r.models) {
    for (const [name, p] of [['plain HTTP', mr.plain.closed], ['actorserve', mr.actorserve.closed]] as const) {
      if (p === null) continue;
      out.push(`| ${mr.model} | ${name} | ${num(p.server.cpuPct)} | ${num(p.server.cpuPerRequestUs, 1)} | ${num(p.server.eventLoopDelayMaxMs, 1)} | ` +
        `${num(p.meanBatch, 1)} | ${num(p.generator.cpuPct)} | ${num(p.generator.loopMaxMs, 1)} | ${num(p.machine.othersPct)}${flag(p)} |`);
    }
  }
  out.push('');
  out.push('Event-loop delay is the max of `nodejs_eventloop_lag_max_seconds` scraped every 500 ms (prom-client resets it at each scrape; ' +
    'its `monitorEventLoopDelay` samples every 2 ms, so an idle loop reads about 2 ms). The plain server and the generators sample the same way. ' +
    'CPU % is of one core. "Other processes" is the machine\'s busy CPU (/proc/stat) less the server and the generators: ' +
    `⚠ marks a phase where it passed ${DISTURBED_OTHERS_PCT}% of a core, so something outside the bench competed for the CPUs.`);
  out.push('');

  const swept = r.models.filter((mr) => mr.actorserve.sweep.length > 0 || mr.plain.sweep.length > 0);
  if (swept.length > 0) {
    out.push('## Open loop: latency against offered load');
    out.push('');
    out.push(`Requests sent on a fixed schedule whatever the replies; ${LATENCY_FROM}. ` +
      'Rates are shares of actorserve\'s closed-loop throughput above.');
    out.push('');
    out.push('| model | offered /s | % of capacity | actorserve done /s | p50 ms | p99 ms | p99.9 ms | errors | plain done /s | p50 ms | p99 ms | p99.9 ms | errors |');
    out.push('|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|');
    for (const mr of swept) {
      const n = Math.max(mr.actorserve.sweep.length, mr.plain.sweep.length);
      for (let i = 0; i < n; i++) {
        const a = mr.actorserve.sweep[i] ?? null;
        const p = mr.plain.sweep[i] ?? null;
        const any = a ?? p!;
        out.push(`| ${mr.model} | ${num(any.offeredRate)} | ${num(any.offeredPctOfCapacity)} | ` +
          `${a ? num(a.throughput) : 'n/a'}${flag(a)} | ${ms(a, 'p50')} | ${ms(a, 'p99')} | ${ms(a, 'p999')} | ${errorsText(a)} | ` +
          `${p ? num(p.throughput) : 'n/a'}${flag(p)} | ${ms(p, 'p50')} | ${ms(p, 'p99')} | ${ms(p, 'p999')} | ${errorsText(p)} |`);
      }
    }
    out.push('');
  }

  const cl = r.cluster;
  if (cl !== null) {
    out.push(`## ${cl.nodes}-node local cluster (${cl.model}, keyless)`);
    out.push('');
    out.push(`CPU comparison: open loop at ${num(cl.rate)} req/s (${num(cl.ratePctOfSoloCapacity)}% of one node's closed-loop capacity, ` +
      `${num(cl.soloCapacity)} req/s): CPU time of every node process (utime + stime from /proc/PID/stat) from the start of the measured window ` +
      'until every answer was in ÷ results that arrived in that span. Both sides get the same unrecorded closed-loop warm-up first. ' +
      `The same number of separate nodes (each alone, no cluster) at the same rate tells what ${cl.nodes} processes at a share of the load cost on these cores, apart from clustering.`);
    out.push('');
    out.push('| figure | value | target |');
    out.push('|---|---:|---|');
    const cpu = (p: PhaseResult | null) =>
      p === null ? 'n/a' : `${num(p.server.cpuPerRequestUs, 1)} µs (${num(p.throughput)} /s, p99 ${ms(p, 'p99')} ms, others ${num(p.machine.othersPct)}%${flag(p)})`;
    const meets = (x: number | null) => (x === null ? ' (not measured)' : x <= cl.target ? ': met ✅' : ': missed ❌');
    out.push(`| CPU per request, one node alone | ${cpu(cl.solo)} | |`);
    out.push(`| CPU per request, ${cl.nodes} nodes, clients on every node | ${cpu(cl.spread)} | |`);
    out.push(`| ratio (clients on every node), forwarded ${num((cl.spread?.forwardedShare ?? Number.NaN) * 100)}% | ${ratio(cl.cpuPerRequestRatio.spread)} | at most ${cl.target}×${meets(cl.cpuPerRequestRatio.spread)} |`);
    if (cl.entry !== null || cl.cpuPerRequestRatio.entry !== null) {
      out.push(`| CPU per request, ${cl.nodes} nodes, all clients on one node | ${cpu(cl.entry)} | |`);
      out.push(`| ratio (all clients on one node), forwarded ${num((cl.entry?.forwardedShare ?? Number.NaN) * 100)}% | ${ratio(cl.cpuPerRequestRatio.entry)} | at most ${cl.target}×${meets(cl.cpuPerRequestRatio.entry)} |`);
    }
    if (cl.separate !== null) {
      out.push(`| CPU per request, ${cl.nodes} separate nodes (no cluster), clients on every node | ${cpu(cl.separate)} | |`);
      out.push(`| ratio (separate nodes ÷ one node): ${cl.nodes} processes at 1/${cl.nodes} of the load each | ${ratio(cl.cpuPerRequestRatio.separate)} | |`);
      out.push(`| cluster ÷ separate nodes (what clustering itself costs): clients on every node, all clients on one node | ${ratio(cl.vsSeparate.spread)}, ${ratio(cl.vsSeparate.entry)} | |`);
    }
    if (cl.join !== null) {
      out.push(`| join under load: spawn of ${cl.join.node} → ready | ${num(cl.join.spawnToReadyMs)} ms | |`);
      out.push(`| join under load: spawn of ${cl.join.node} → its first result | ${num(cl.join.spawnToFirstResultMs)} ms | |`);
    }
    if (cl.kill !== null) {
      out.push(`| SIGKILL of ${cl.kill.node} → marked down on ${cl.kill.survivor} | ${num(cl.kill.killToDownMs)} ms | within 3 000 ms (README) |`);
    }
    if (cl.churn !== null) {
      out.push(`| requests during join and kill (closed loop, ${cl.churn.concurrency} in flight) | ${num(cl.churn.ok)} ok, errors: ${errorsText(cl.churn)} | every request answered |`);
    }
    const perNode = (p: PhaseResult | null) => (p === null ? 'n/a' : Object.entries(p.perNode).sort().map(([k, v]) => `${k} ${num(v)}`).join(', ') || 'none');
    out.push(`| requests per node, clients on every node | ${perNode(cl.spread)} | |`);
    if (cl.entry !== null) out.push(`| requests per node, all clients on one node | ${perNode(cl.entry)} | |`);
    if (cl.churn !== null) out.push(`| requests per node, join and kill run | ${perNode(cl.churn)} | |`);
    const eld = [cl.solo, cl.separate, cl.spread, cl.entry, cl.churn].filter((p): p is PhaseResult => p !== null).map((p) => p.server.eventLoopDelayMaxMs).filter((x): x is number => x !== null);
    if (eld.length > 0) out.push(`| max event-loop delay of any node, cluster phases | ${num(Math.max(...eld), 1)} ms | |`);
    out.push('');
  }

  const ov = r.overload ?? null;
  const runs = [ov, ...(r.overloadRepeats ?? [])];
  if (runs.length > 1) out.push(...renderOverloadSeries(runs));
  if (ov !== null) out.push(...renderOverload(ov, runs.length > 1 ? `run 1 of ${runs.length}, in full` : undefined));

  if (charts.length > 0) {
    out.push('## Charts');
    out.push('');
    for (const c of charts) out.push(`![${c.replace(/\.svg$/, '')}](${c})`);
    out.push('');
  }
  if (r.errors.length > 0) {
    out.push('## Errors');
    out.push('');
    for (const e of r.errors) out.push(`- ${e.phase}: ${e.message.split('\n')[0]}`);
    out.push('');
  }
  out.push(`Processes started and stopped: ${r.processes.length}. All figures, histograms and timelines: results.json.`);
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------- overload

const pct = (x: number | null | undefined, digits = 0): string => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : `${num(x * 100, digits)}%`);
const verdict = (met: boolean | null): string => (met === null ? ' (not measured)' : met ? ': met ✅' : ': missed ❌');
const errorsOf = (e: Record<string, number>, unanswered = 0): string => {
  const parts = Object.entries(e).map(([k, v]) => `${k} ${num(v)}`);
  if (unanswered > 0) parts.push(`unanswered ${num(unanswered)}`);
  return parts.join(', ') || 'none';
};

/**
 * Results completed in each whole second of a phase's timeline, from its
 * first send (warm-up included) to the end of its measured window, as shares
 * of `peak`: how fast the node and the generator reached their steady state.
 */
export function runUp(p: PhaseResult, peak: number): string {
  const tl = p.timeline;
  const seconds = Math.round((tl.measureTo - tl.startAt) / tl.bucketMs);
  if (peak <= 0 || tl.bucketMs !== 1000 || seconds < 1) return 'n/a';
  return Array.from({ length: seconds }, (_, i) => pct((tl.ok[i] ?? 0) / peak)).join(', ');
}

/** The first server's main thread over a phase's window: `39%, 1,394/s`, or n/a. */
function mainThreadOf(p: PhaseResult | null | undefined): string {
  const m = p?.server.mainThreads?.[0];
  return m === undefined ? 'n/a' : `${num(m.cpuPct)}%, ${num(m.preemptedPerS)}/s`;
}

/**
 * A node's busiest thread besides its event loop over the phase, and its CPU per result: `93%, 1.75 ms`. Serving one
 * thread-run model, that is the inference thread; ms per result rising while its CPU share does not is the thread
 * getting less done per second it runs (smaller batches, or a slower machine than the guest's clock shows).
 */
function inferenceOf(p: PhaseResult | null | undefined): string {
  const pct = p?.server.mainThreads?.[0]?.busiestOtherPct;
  if (p == null || pct === undefined) return 'n/a';
  return `${num(pct)}%, ${msPerResultOf(p)}`;
}

/** CPU ms of the node's busiest thread besides the event loop per result over a phase: `1.75 ms`, or n/a. */
function msPerResultOf(p: PhaseResult | null | undefined): string {
  const pct = p?.server.mainThreads?.[0]?.busiestOtherPct;
  return p == null || pct === undefined || !(p.throughput > 0) ? 'n/a' : `${num((pct * 10) / p.throughput, 2)} ms`;
}

/** How the overload's rate was set again when the node ran faster after a first try: empty when it was not. */
function rerunText(ov: OverloadResults): string {
  const first = ov.firstTry;
  if (first === undefined) return '';
  return `; the closed loop after a first try at ${ov.factor}× that ran ${num(first.closedLoopAfter)} req/s, over ${first.rerunAbove}× it, ` +
    `so the overload and the closed loop after it were run again at ${ov.factor}× ${num(first.closedLoopAfter)} req/s (the first try is in the figures below)`;
}

/** The overload's offered rate ÷ peak, or null when either is missing. */
function offeredVsPeak(ov: OverloadResults): number | null {
  const offered = ov.overload?.offeredRate;
  return offered == null || !(ov.peak > 0) ? null : offered / ov.peak;
}

/** Offered under 90% of the factor asked for: the peak was measured higher after the overload than where its rate was set. */
const underOffered = (ov: OverloadResults): boolean => {
  const f = offeredVsPeak(ov);
  return f !== null && f < 0.9 * ov.factor;
};

/** The overload's offered rate ÷ peak, ⚠ when under-offered. */
function asRun(ov: OverloadResults): string {
  const f = offeredVsPeak(ov);
  return f === null ? 'n/a' : `${num(f, 2)}×${underOffered(ov) ? ' ⚠' : ''}`;
}

/** Goodput over 100% of peak: the node completed more under overload than in any loop around it, so the machine's speed changed in between. */
const overPeak = (ov: OverloadResults): boolean => (ov.targets.goodputVsPeak.value ?? 0) > 1;

/** A figure in ms to two places, or n/a. */
const msOf = (v: number | null): string => (v === null ? 'n/a' : `${num(v, 2)} ms`);

/** How late the phase's generators sent against their schedule: `0.00 / 1.43 ms`, or n/a (closed loop, or an older result). */
function sendLateOf(p: PhaseResult | null | undefined): string {
  const l = p?.generator.sendLateMs;
  return l === undefined || l.count === 0 ? 'n/a' : `${num(l.p50, 2)} / ${num(l.p99, 2)} ms`;
}

/** The phase's GC pauses: scavenges, then full collections, each as count, ms in all and share of the window. */
function gcOf(p: PhaseResult | null): string {
  const gc = p?.server.gc;
  if (p === null || gc === undefined || gc === null) return 'n/a';
  const part = (what: string, k: { count: number; ms: number } | undefined) =>
    `${what} ${num(k?.count ?? 0)}: ${num(k?.ms ?? 0, 1)} ms (${pct((k?.ms ?? 0) / (p.durationS * 1000), 1)})`;
  return `${part('scavenges', gc['minor'])}; ${part('full', gc['major'])}`;
}

/** The "## Overload" section: the three targets, then the detail; `which` names the run when there are several. */
export function renderOverload(ov: OverloadResults, which?: string): string[] {
  const out: string[] = [];
  const o = ov.overload;
  const u = ov.unloaded;
  const t = ov.targets;
  const mixText = PRIORITIES.map((p) => `${p} ${num(ov.mix[p] * 100)}%`).join(', ');
  out.push(`## Overload (${ov.model}, ${ov.factor}× peak)${which === undefined ? '' : `: ${which}`}`);
  out.push('');
  const closed = ov.closedLoop === null ? 'not measured' : `${num(ov.closedLoop.throughput)} req/s${ov.closedLoop.source === 'earlier phase' ? ' (earlier phase)' : ''}`;
  const after = ov.closedLoopAfter === undefined ? '' : `, the same just after it, ${ov.closedLoopAfter === null ? 'n/a' : `${num(ov.closedLoopAfter)} req/s`}`;
  const earlier = ov.earlierClosedLoop == null ? '' : ` (The run's closed-loop phase of ${ov.model}, another node minutes earlier: ${num(ov.earlierClosedLoop)} req/s.)`;
  const basis = ov.offeredBasis ?? ov.peak;
  out.push(`One fresh node serving ${ov.model}. Peak ${num(ov.peak)} req/s = the ${ov.peakSource ?? 'n/a'}: the highest of its closed-loop throughput just before the overload, ` +
    `${closed}${after}, and what an open loop at 100% of the first completed, ${ov.openAtPeak === null ? 'n/a' : `${num(ov.openAtPeak.throughput)} /s`}; ` +
    `offered loads are shares of the higher of the two before it, ${num(ov.firstTry?.offeredBasis ?? basis)} req/s${rerunText(ov)}.${earlier} ` +
    `Open loops with priorities ${mixText} (a fixed interleaving: exact over the run): ${num(ov.unloadedPct)}% of that ` +
    `(${u === null ? 'n/a' : `${num(u.offeredRate)} req/s, ${num(u.durationS, 1)} s`}) as the unloaded reference, then ${ov.factor}× that ` +
    `(${o === null ? 'n/a' : `${num(o.offeredRate)} req/s, ${num(o.durationS, 1)} s measured after ${num(o.warmupS, 2)} s of warm-up, for the node and the generator to reach their steady state and the model queue to fill`}). ` +
    `Latency: ${LATENCY_FROM}; goodput = results completed inside the measured window per second.`);
  out.push('');
  out.push('| target | value | bound |');
  out.push('|---|---:|---|');
  const sped = overPeak(ov) ? ' ⚠ more than any closed loop around it: this machine\'s speed changed' : '';
  out.push(`| goodput ÷ peak | ${pct(t.goodputVsPeak.value, 1)} (${o === null ? 'n/a' : num(o.throughput)} /s of ${num(ov.peak)})${flag(o)}${sped} | at least ${pct(t.goodputVsPeak.min)}${verdict(t.goodputVsPeak.met)} |`);
  const refusals = o?.overloaded;
  out.push(`| p99 time to an \`overloaded\` answer | ${msOf(t.overloadedP99Ms.value)} (${num(refusals?.count ?? null)} answers) | under ${t.overloadedP99Ms.max} ms${verdict(t.overloadedP99Ms.met)} |`);
  const hiO = o?.byPriority?.high;
  const hiU = u?.byPriority?.high;
  const hiDetail = hiO === undefined || hiU === undefined ? 'n/a' : `${num(hiO.latencyMs.p99, 2)} ms ÷ ${num(hiU.latencyMs.p99, 2)} ms`;
  out.push(`| high-priority p99 under overload ÷ unloaded | ${ratio(t.highP99VsUnloaded.value)} (${hiDetail}) | under ${t.highP99VsUnloaded.max}×${verdict(t.highP99VsUnloaded.met)} |`);
  out.push('');

  out.push('| figure | value |');
  out.push('|---|---:|');
  out.push(`| offered ÷ peak: the overload as run (under ${ov.factor}× when the node ran faster after it than before, where the rate was set) | ${asRun(ov)} |`);
  const first = ov.firstTry;
  if (first !== undefined) {
    const fo = first.overload;
    const foP99 = fo.overloaded !== undefined && fo.overloaded.count > 0 ? fo.overloaded.latencyMs.p99 : null;
    out.push(`| the first try, at ${ov.factor}× ${num(first.offeredBasis)} req/s: goodput ÷ peak, p99 time to \`overloaded\`, the closed loop after it | ` +
      `${pct(ov.peak > 0 ? fo.throughput / ov.peak : null, 1)}, ${msOf(foP99)}, ${num(first.closedLoopAfter)} req/s |`);
  }
  const lat = refusals !== undefined && refusals.count > 0
    ? `p50 ${num(refusals.latencyMs.p50, 2)}, p99 ${num(refusals.latencyMs.p99, 2)}, max ${num(refusals.latencyMs.max, 2)} ms; ${num(refusals.count)} answers`
    : 'none';
  out.push(`| results each second from the overload's first send, ÷ peak (${o === null ? 'n/a' : `${num(o.warmupS, 2)} s warm-up, then the window`}) | ${o === null ? 'n/a' : runUp(o, ov.peak)} |`);
  out.push(`| time to \`overloaded\` under overload | ${lat} |`);
  const floorRow = (what: string, floor: OverloadedAnswers | undefined) => {
    if (floor !== undefined && floor.count > 0) {
      out.push(`| ${what} | p50 ${num(floor.latencyMs.p50, 2)}, p99 ${num(floor.latencyMs.p99, 2)}, max ${num(floor.latencyMs.max, 2)} ms; ${num(floor.count)} answers |`);
    }
  };
  floorRow('the same, from a server that refuses at once (bench/refuser.ts: the floor of this generator on these cores)', ov.refusalFloor?.overloaded);
  floorRow('the same server, beside one thread that computes at the inference nice (as the node\'s inference thread under overload)', ov.refusalFloorBusy?.overloaded);
  if (refusals !== undefined) {
    const hints = refusals.retryAfterMs === null ? 'none given' : `given: ${num(refusals.retryAfterMs.min)}–${num(refusals.retryAfterMs.max)} ms, mean ${num(refusals.retryAfterMs.mean)}`;
    out.push(`| \`overloaded\` answers without \`retryAfterMs\` | ${num(refusals.missingRetryAfter)} of ${num(refusals.count)} (${hints}) |`);
    const reasons = Object.entries(refusals.reasons).sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k.replace(/\|/g, '\\|')}: ${num(v)}`).join('; ');
    if (reasons !== '') out.push(`| \`overloaded\` reasons (the server's messages) | ${reasons} |`);
  }
  out.push(`| high-priority requests that succeeded under overload | ${hiO === undefined ? 'n/a' : `${pct(hiO.okShare)} (${num(hiO.ok)} of ${num(hiO.scheduled)})`} |`);
  out.push(`| node: max event-loop delay, CPU under overload | ${o === null ? 'n/a' : `${num(o.server.eventLoopDelayMaxMs, 1)} ms, ${num(o.server.cpuPct)}% of a core`} |`);
  out.push('| event loop (main thread): CPU % of a core, times a second it was preempted — the node under overload; the refusal floor; ' +
    `the floor beside a busy thread | ${[o, ov.refusalFloor, ov.refusalFloorBusy].map(mainThreadOf).join('; ')} |`);
  out.push('| node: its busiest thread besides the event loop (the inference thread): CPU % of a core, and CPU ms of it per result — ' +
    `the open loop at 100% of the closed loop; under overload | ${[ov.openAtPeak, o].map(inferenceOf).join('; ')} |`);
  out.push(`| node: GC pauses of its main isolate under overload, count: ms in all (share of the window) | ${gcOf(o)} |`);
  out.push(`| node RSS before / max during / after the overload | ${num(ov.rssMiB.before)} / ${num(ov.rssMiB.max)} / ${num(ov.rssMiB.after)} MiB |`);
  const buf = o?.generator.sendBufferMaxBytes;
  out.push(`| generator: CPU, most bytes unsent on one connection, other processes | ${o === null ? 'n/a' : `${num(o.generator.cpuPct)}%, ${buf === undefined ? 'n/a' : `${num(buf / 2 ** 20, 1)} MiB`}, ${num(o.machine.othersPct)}%${flag(o)}`} |`);
  out.push('| generator: requests sent later than scheduled (it waited for a core), p50 / p99 — under overload; the refusal floor; ' +
    `the floor beside a busy thread | ${[o, ov.refusalFloor, ov.refusalFloorBusy].map(sendLateOf).join('; ')} |`);
  const a = ov.after;
  out.push(`| requests after the overload (fresh connection, every priority) | ${a === null ? 'n/a' : `${num(a.ok)} of ${num(a.sent)} ok, failed: ${errorsOf(a.errors)}`} |`);
  out.push('');

  out.push('| phase | priority | scheduled | ok | ok % | done /s | p50 ms | p99 ms | max ms | server p50 ms | server p99 ms | errors |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  const phases: [string, PhaseResult | null][] = [['100% of closed loop', ov.openAtPeak], [`${num(ov.unloadedPct)}% of peak`, u], [`${ov.factor}× peak`, o]];
  for (const [name, p] of phases) {
    if (p === null) continue;
    for (const prio of PRIORITIES) {
      const c = p.byPriority?.[prio];
      if (c === undefined) continue;
      const l = (k: 'p50' | 'p99' | 'max', s = c.latencyMs) => (s.count === 0 ? 'n/a' : num(s[k], 2));
      out.push(`| ${name}${flag(p)} | ${prio} | ${num(c.scheduled)} | ${num(c.ok)} | ${pct(c.okShare)} | ${num(c.throughput)} | ` +
        `${l('p50')} | ${l('p99')} | ${l('max')} | ${l('p50', c.serverMs)} | ${l('p99', c.serverMs)} | ${errorsOf(c.errors, c.unanswered)} |`);
    }
  }
  out.push('');
  out.push('ok % = results ÷ requests scheduled inside the window; done /s counts results completed inside the window, whenever sent. ' +
    'Server ms is the node\'s own `timings.totalMs` (its receipt of the request to the result): latency less server time is time spent ' +
    'before the node took the request in (the client\'s send buffer, TCP, the node not reading).');
  out.push('');
  return out;
}

/** The middle value (the mean of the two middle ones for an even count), or null for none. */
export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A floor's p99 time to `overloaded`, or null when it was not measured. */
const floorP99 = (p: PhaseResult | null | undefined): number | null => {
  const f = p?.overloaded;
  return f === undefined || f.count === 0 ? null : f.latencyMs.p99;
};

type Target = OverloadResults['targets'][keyof OverloadResults['targets']];
const mark = (t: Target): string => (t.met === null ? '' : t.met ? ' ✅' : ' ❌');
/** How many of the run's three targets it met. */
const targetsMet = (ov: OverloadResults): number => Object.values(ov.targets).filter((t: Target) => t.met === true).length;

/**
 * The "## Overload …: N runs" section (`--overload-runs`): one row per run
 * (each the whole phase on a fresh node), then each target's median, range
 * and how many runs met it, over the runs that completed. A run marked ⚠
 * (offered well under the factor as run, or goodput over 100%) counts like
 * the others, and the section says how many there were.
 */
export function renderOverloadSeries(runs: readonly (OverloadResults | null)[]): string[] {
  const done = runs.filter((r): r is OverloadResults => r !== null);
  const first = done[0];
  const out: string[] = [];
  out.push(`## Overload${first === undefined ? '' : ` (${first.model}, ${first.factor}× peak)`}: ${runs.length} runs`);
  out.push('');
  out.push('Each run is the whole overload phase on a fresh node, one after another (`--overload-runs`); run 1 is given in full below. ' +
    'Floors: the same open loop against a server that refuses at once, idle and beside a busy thread. ' +
    '⚠: offered under 90% of the factor as run (the node ran faster after the overload than where its rate was set), ' +
    'or goodput over 100% of peak (this machine\'s speed changed during the run). ' +
    'Closed loops: the node\'s closed-loop throughput before the overload, after a first try (when it ran again) and after the overload, req/s; ' +
    'peak is the highest of them and the open loop at 100%. ' +
    'Inference: CPU of the node\'s inference thread per result, in the open loop at 100% of the closed loop and under overload ' +
    '(under overload it shares a core with more of the event loop and the generator, which costs it per row; so does a slower spell of the machine; whole batches did not cost less).');
  out.push('');
  out.push('| run | peak req/s | closed loops | offered ÷ peak | goodput ÷ peak | p99 time to `overloaded` | floors p99, idle / busy | high-priority p99 ÷ unloaded | targets met | inference, 100% → overload |');
  out.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  runs.forEach((ov, i) => {
    if (ov === null) return void out.push(`| ${i + 1} | failed (see Errors) | | | | | | | | |`);
    const t = ov.targets;
    const loops = [ov.closedLoop?.throughput, ov.firstTry?.closedLoopAfter, ov.closedLoopAfter].filter((x) => x !== undefined).map((x) => num(x)).join(' → ');
    out.push(`| ${i + 1} | ${num(ov.peak)} | ${loops} | ${asRun(ov)} | ${pct(t.goodputVsPeak.value, 1)}${overPeak(ov) ? ' ⚠' : ''}${mark(t.goodputVsPeak)} | ` +
      `${msOf(t.overloadedP99Ms.value)}${mark(t.overloadedP99Ms)} | ${msOf(floorP99(ov.refusalFloor))} / ${msOf(floorP99(ov.refusalFloorBusy))} | ` +
      `${ratio(t.highP99VsUnloaded.value)}${mark(t.highP99VsUnloaded)} | ${targetsMet(ov)} of 3 | ${msPerResultOf(ov.openAtPeak)} → ${msPerResultOf(ov.overload)} |`);
  });
  out.push('');
  const values = (f: (ov: OverloadResults) => number | null): number[] => done.map(f).filter((x): x is number => x !== null);
  const row = (what: string, f: (ov: OverloadResults) => number | null, show: (x: number | null) => string, met?: (ov: OverloadResults) => boolean | null) => {
    const xs = values(f);
    const range = xs.length === 0 ? 'n/a' : `${show(Math.min(...xs))} – ${show(Math.max(...xs))}`;
    const count = met === undefined ? '' : `${done.filter((ov) => met(ov) === true).length} of ${done.length}`;
    out.push(`| ${what} | ${show(median(xs))} | ${range} | ${count} |`);
  };
  out.push(`| over the ${done.length} run${done.length === 1 ? '' : 's'} that completed | median | range | met |`);
  out.push('|---|---:|---:|---:|');
  const bound = first?.targets;
  row(`goodput ÷ peak (at least ${pct(bound?.goodputVsPeak.min)})`, (ov) => ov.targets.goodputVsPeak.value, (x) => pct(x, 1), (ov) => ov.targets.goodputVsPeak.met);
  row(`p99 time to an \`overloaded\` answer (under ${bound?.overloadedP99Ms.max ?? 'n/a'} ms)`, (ov) => ov.targets.overloadedP99Ms.value, msOf, (ov) => ov.targets.overloadedP99Ms.met);
  row(`high-priority p99 under overload ÷ unloaded (under ${bound?.highP99VsUnloaded.max ?? 'n/a'}×)`, (ov) => ov.targets.highP99VsUnloaded.value, ratio, (ov) => ov.targets.highP99VsUnloaded.met);
  out.push(`| all three | | | ${done.filter((ov) => targetsMet(ov) === 3).length} of ${done.length} |`);
  row('refusal floor p99, idle', (ov) => floorP99(ov.refusalFloor), msOf);
  row('refusal floor p99, beside a busy thread', (ov) => floorP99(ov.refusalFloorBusy), msOf);
  row('peak, req/s', (ov) => ov.peak, (x) => num(x));
  row('offered ÷ peak, as run', offeredVsPeak, (x) => (x === null ? 'n/a' : `${num(x, 2)}×`));
  out.push('');
  const marked = done.filter((ov) => underOffered(ov) || overPeak(ov)).length;
  const failed = runs.length - done.length;
  out.push(`Runs marked ⚠: ${marked} of ${done.length}, counted above like the others.${failed > 0 ? ` Runs that failed: ${failed} (see Errors), left out.` : ''}`);
  out.push('');
  return out;
}

// ---------------------------------------------------------------- charts

function sweepSeries(mr: ModelResults): Series[] {
  const s: Series[] = [];
  const add = (name: string, phases: readonly PhaseResult[], k: 'p50' | 'p99' | 'p999', dashed: boolean) => {
    if (phases.length === 0) return;
    s.push({ name, dashed, points: phases.map((p) => [p.offeredRate ?? 0, p.latencyMs[k]] as const) });
  };
  add('actorserve p50', mr.actorserve.sweep, 'p50', false);
  add('actorserve p99', mr.actorserve.sweep, 'p99', false);
  add('actorserve p99.9', mr.actorserve.sweep, 'p999', false);
  add('plain HTTP p50', mr.plain.sweep, 'p50', true);
  add('plain HTTP p99', mr.plain.sweep, 'p99', true);
  add('plain HTTP p99.9', mr.plain.sweep, 'p999', true);
  return s;
}

function timelineSeries(p: PhaseResult): Series[] {
  const sec = p.timeline.bucketMs / 1000;
  // Only whole buckets up to the end of the measured window: a partial last one would read as a drop.
  const whole = Math.max(1, Math.floor((p.timeline.measureTo - p.timeline.startAt) / p.timeline.bucketMs));
  // Bucket i covers [i, i+1) s; plot it at its middle.
  const pts = (xs: readonly number[]) => xs.slice(0, whole).map((v, i) => [(i + 0.5) * sec, v / sec] as const);
  const s: Series[] = [{ name: 'results /s', points: pts(p.timeline.ok) }];
  if (p.timeline.errors.some((v) => v > 0)) s.push({ name: 'errors /s', points: pts(p.timeline.errors) });
  return s;
}

export function renderCharts(r: BenchResults): Record<string, string> {
  const charts: Record<string, string> = {};
  for (const mr of r.models) {
    const series = sweepSeries(mr);
    if (series.length === 0) continue;
    charts[`latency-vs-load-${mr.model}.svg`] = lineChart({
      title: `${mr.model}: latency against offered load (open loop)`,
      xLabel: 'offered load, requests/s',
      yLabel: 'latency, ms',
      yLog: true,
      series,
    });
    const done: Series[] = [];
    if (mr.actorserve.sweep.length > 0) done.push({ name: 'actorserve', points: mr.actorserve.sweep.map((p) => [p.offeredRate ?? 0, p.throughput] as const) });
    if (mr.plain.sweep.length > 0) done.push({ name: 'plain HTTP', dashed: true, points: mr.plain.sweep.map((p) => [p.offeredRate ?? 0, p.throughput] as const) });
    const offered = [...mr.actorserve.sweep, ...mr.plain.sweep].map((p) => p.offeredRate ?? 0);
    if (offered.length > 0) done.push({ name: 'offered', dashed: true, points: [[0, 0], [Math.max(...offered), Math.max(...offered)]] });
    charts[`throughput-vs-load-${mr.model}.svg`] = lineChart({
      title: `${mr.model}: results per second against offered load (open loop)`,
      xLabel: 'offered load, requests/s',
      yLabel: 'results/s',
      series: done,
    });
  }

  const bars: BarGroup[] = r.models.map((mr) => ({
    label: mr.model,
    bars: [
      ...(mr.ceiling?.batch1 ? [{ name: 'in-process, batch 1', value: mr.ceiling.batch1.itemsPerSec }] : []),
      ...(mr.plain.closed ? [{ name: 'plain HTTP', value: mr.plain.closed.throughput }] : []),
      ...(mr.actorserve.closed ? [{ name: 'actorserve, 1 node', value: mr.actorserve.closed.throughput }] : []),
    ],
  }));
  if (bars.some((g) => g.bars.length > 0)) {
    // One chart per model: iris and text-orientation differ by orders of magnitude.
    for (const g of bars) {
      if (g.bars.length === 0) continue;
      charts[`throughput-${g.label}.svg`] = barChart({ title: `${g.label}: throughput, closed loop`, yLabel: 'requests/s', groups: [g] });
    }
  }

  const cl = r.cluster;
  if (cl?.churn) {
    const p = cl.churn;
    const markers: Marker[] = p.events.map((e) => ({ x: e.atS, label: e.label }));
    markers.push({ x: (p.timeline.measureFrom - p.timeline.startAt) / 1000, label: 'warm-up ends' });
    charts['throughput-timeline.svg'] = lineChart({
      title: `${cl.nodes}-node cluster under closed-loop load: join and SIGKILL (${cl.model})`,
      xLabel: 'seconds',
      yLabel: 'per second (1 s buckets)',
      series: timelineSeries(p),
      markers,
    });
  } else {
    const p = r.models.map((mr) => mr.actorserve.closed).find((x): x is PhaseResult => x !== null);
    if (p !== undefined) {
      charts['throughput-timeline.svg'] = lineChart({
        title: `actorserve, 1 node, closed loop (${p.model})`,
        xLabel: 'seconds',
        yLabel: 'per second (1 s buckets)',
        series: timelineSeries(p),
        markers: [{ x: (p.timeline.measureFrom - p.timeline.startAt) / 1000, label: 'warm-up ends' }],
      });
    }
  }

  const nodeGroups: BarGroup[] = [];
  const nodeBars = (label: string, p: PhaseResult | null) => {
    if (p === null || Object.keys(p.perNode).length === 0) return;
    nodeGroups.push({ label, bars: Object.entries(p.perNode).sort().map(([name, value]) => ({ name, value })) });
  };
  if (cl !== null) {
    nodeBars('clients on every node', cl.spread);
    nodeBars('clients on one node', cl.entry);
    nodeBars('join + kill run', cl.churn);
  } else {
    for (const mr of r.models) nodeBars(`${mr.model}, 1 node`, mr.actorserve.closed);
  }
  if (nodeGroups.length > 0) {
    charts['requests-per-node.svg'] = barChart({ title: 'Requests per node (the node field of each result)', yLabel: 'results in the measured window', groups: nodeGroups });
  }
  return charts;
}
