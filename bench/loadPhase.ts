/**
 * One load phase, seen from the bench: fork the generator processes, start
 * them together, sample the server processes (CPU from /proc, event-loop
 * delay from /metrics) over the measured window, merge what the generators
 * report into a {@link PhaseResult}, and make sure every generator is gone.
 */
import { join } from 'node:path';
import { projectRoot } from '../src/models/registry.js';
import { PRIORITIES } from '../src/transport/protocol.js';
import { mergeHistograms, summarize, encodeHistogram } from './histogram.js';
import type { FromGenerator, GeneratorReport, Mode, Target, ToGenerator } from './loadSpec.js';
import type { ModelInput } from './payload.js';
import { Child, describeExit } from '../cluster/child.js';
import { cpuSecondsOf, epochMs, httpText, machineBusySeconds, mainThreadSample, type MainThreadSample } from './processes.js';
import type { GcPauses, MainThreadFigures, OverloadedAnswers, PhaseResult, PriorityPhase, SystemName } from './results.js';

/** The generator runs from the build, also when this module is imported from the TypeScript sources (tests). */
export const LOADGEN_PATH = join(projectRoot, 'dist', 'bench', 'loadgen.js');

const READY_TIMEOUT_MS = 30_000;
const START_DELAY_MS = 100;
const LOOP_SAMPLE_MS = 500;

export interface PhaseOptions {
  label: string;
  system: SystemName;
  target: Target;
  input: ModelInput;
  mode: Mode;
  /** WebSocket connections (or, open-loop HTTP, pipelined connections) over all generators. */
  connections: number;
  generators: number;
  warmupS: number;
  durationS: number;
  drainTimeoutMs: number;
  offeredPctOfCapacity?: number;
  /** Server processes whose CPU time is charged to this phase's requests. */
  serverPids: number[];
  /** `/metrics` URLs to sample for event-loop delay. */
  metricsUrls: string[];
  /** First result seen from a node (epoch ms). */
  onNode?: (node: string, at: number) => void;
  /** Called once the generators have been told when to start. */
  onStart?: (startAt: number, measureFrom: number) => void;
  /** Ends the run early when it resolves. */
  stopWhen?: Promise<void>;
}

function split(total: number, parts: number, i: number): number {
  return Math.floor(total / parts) + (i < total % parts ? 1 : 0);
}

/** `nodejs_eventloop_lag_max_seconds` (any labels) from a Prometheus text page, in ms. */
export function parseLoopMaxMs(text: string): number | undefined {
  const m = /^nodejs_eventloop_lag_max_seconds(?:\{[^}]*\})?\s+([-+0-9.eE]+|NaN)/m.exec(text);
  if (m === null) return undefined;
  const v = Number(m[1]) * 1000;
  return Number.isFinite(v) ? v : undefined;
}

/** prom-client's `nodejs_gc_duration_seconds` count and sum for each GC kind (minor, major, incremental, weakcb) on one Prometheus text page. */
export function parseGcTotals(text: string): Record<string, { count: number; seconds: number }> {
  const out: Record<string, { count: number; seconds: number }> = {};
  for (const m of text.matchAll(/^nodejs_gc_duration_seconds_(count|sum)\{[^}]*kind="([a-z]+)"[^}]*\}\s+([-+0-9.eE]+)$/gm)) {
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    const k = (out[m[2]!] ??= { count: 0, seconds: 0 });
    if (m[1] === 'count') k.count += v;
    else k.seconds += v;
  }
  return out;
}

/** GC pauses of the servers between two scrapes of each URL, per kind, summed over the URLs; null when a scrape is missing. */
export function gcBetween(from: readonly (string | undefined)[], to: readonly (string | undefined)[]): GcPauses | null {
  if (from.length === 0 || to.length !== from.length || from.some((t) => t === undefined) || to.some((t) => t === undefined)) return null;
  const out: GcPauses = {};
  for (const [i, a] of from.entries()) {
    const before = parseGcTotals(a!);
    for (const [kind, after] of Object.entries(parseGcTotals(to[i]!))) {
      const k = (out[kind] ??= { count: 0, ms: 0 });
      k.count += after.count - (before[kind]?.count ?? 0);
      k.ms += (after.seconds - (before[kind]?.seconds ?? 0)) * 1000;
    }
  }
  for (const k of Object.values(out)) k.ms = Math.round(k.ms * 100) / 100;
  return out;
}

/** What the servers' /metrics pages said over a window. */
interface MetricsSampling {
  loopMaxMs: number | null;
  samples: number;
  gc: GcPauses | null;
}

/**
 * Samples the event-loop delay max of every URL every 500 ms until `until`
 * resolves. prom-client's gauge is the max of a `monitorEventLoopDelay`
 * histogram that it resets on every scrape, so one first scrape resets it
 * and the max over the samples covers the window. The first and the last
 * scrape also bound the window's GC pauses.
 */
function sampleMetrics(urls: readonly string[], until: Promise<void>): Promise<MetricsSampling> {
  if (urls.length === 0) return Promise.resolve({ loopMaxMs: null, samples: 0, gc: null });
  let done = false;
  void until.then(() => (done = true));
  const scrapeAll = () => Promise.all(urls.map((u) => httpText(u, 2_000)));
  return (async () => {
    const first = await scrapeAll(); // also resets the loop-delay gauge
    let last: (string | undefined)[] = [];
    let max: number | null = null;
    let samples = 0;
    for (let i = 0; !done && i < 100_000; i++) {
      await Promise.race([new Promise((r) => setTimeout(r, LOOP_SAMPLE_MS)), until]);
      last = await scrapeAll();
      for (const t of last) {
        const v = t === undefined ? undefined : parseLoopMaxMs(t);
        if (v === undefined) continue;
        samples++;
        max = max === null ? v : Math.max(max, v);
      }
    }
    return { loopMaxMs: max, samples, gc: gcBetween(first, last) };
  })();
}

function waitFor<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms))),
  ]);
}

/** Runs one phase. @throws when a generator fails, a connection breaks, or the phase overruns its bounds. */
export async function runPhase(o: PhaseOptions): Promise<PhaseResult> {
  const g = Math.max(1, Math.floor(o.generators));
  const gens: Child[] = [];
  const reports: Promise<GeneratorReport>[] = [];
  const readies: Promise<void>[] = [];
  try {
    for (let i = 0; i < g; i++) {
      const mode: Mode = o.mode.kind === 'closed'
        ? { kind: 'closed', concurrency: Math.max(1, split(o.mode.concurrency, g, i)) }
        : { kind: 'open', rate: o.mode.rate / g, ...(o.mode.mix !== undefined ? { mix: o.mode.mix } : {}) };
      const t = Child.fork(`loadgen ${o.label}${g > 1 ? ` #${i + 1}` : ''}`, LOADGEN_PATH);
      gens.push(t);
      let ready!: () => void;
      readies.push(new Promise<void>((r) => (ready = r)));
      reports.push(
        new Promise<GeneratorReport>((resolve, reject) => {
          t.proc.on('message', (msg: FromGenerator) => {
            switch (msg.t) {
              case 'ready':
                ready();
                break;
              case 'node':
                o.onNode?.(msg.node, msg.at);
                break;
              case 'done':
                resolve(msg.report);
                break;
              case 'failed':
                reject(new Error(`${t.role}: ${msg.message}`));
                break;
            }
          });
          void t.exited.then((e) => reject(new Error(`${t.role} exited (${describeExit(e)}) without a report:\n${t.tail.join('\n')}`)));
        }),
      );
      reports.at(-1)!.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
      const run: ToGenerator = {
        t: 'run',
        spec: {
          target: o.target,
          input: o.input,
          mode,
          connections: Math.max(1, split(o.connections, g, i)),
          warmupS: o.warmupS,
          durationS: o.durationS,
          scheduleOffsetMs: o.mode.kind === 'open' ? (i * 1000) / o.mode.rate : 0,
          drainTimeoutMs: o.drainTimeoutMs,
        },
      };
      t.proc.send(run);
    }
    await waitFor(Promise.race([Promise.all(readies), Promise.all(reports)]), READY_TIMEOUT_MS, `${o.label}: generators ready`);

    const startAt = epochMs() + START_DELAY_MS;
    const measureFrom = startAt + o.warmupS * 1000;
    const plannedTo = measureFrom + o.durationS * 1000;
    for (const t of gens) t.proc.send({ t: 'go', startAt } satisfies ToGenerator);
    o.onStart?.(startAt, measureFrom);

    // CPU of the server processes: at the start of the window, at its end (CPU %), and once every
    // answer is in (CPU per request: work received in the window is paid for even when it completes
    // in the drain, so a server that falls behind is not flattered).
    let cpuFrom: number[] | undefined;
    let cpuTo: number[] | undefined;
    let busyFrom: number | undefined;
    let busyTo: number | undefined;
    let mainFrom: (MainThreadSample | undefined)[] = [];
    let mainTo: (MainThreadSample | undefined)[] = [];
    let selfFrom = process.cpuUsage();
    let selfUsed: NodeJS.CpuUsage | undefined;
    let cpuFromAt = 0;
    let cpuToAt = 0;
    let endWindow!: () => void;
    const windowEnded = new Promise<void>((r) => (endWindow = r));
    let metricsSampling: Promise<MetricsSampling> | undefined;
    const startTimer = setTimeout(() => {
      cpuFrom = cpuSecondsOf(o.serverPids);
      busyFrom = machineBusySeconds();
      mainFrom = o.serverPids.map(mainThreadSample);
      selfFrom = process.cpuUsage();
      cpuFromAt = epochMs();
      metricsSampling = sampleMetrics(o.metricsUrls, windowEnded);
    }, Math.max(0, measureFrom - epochMs()));
    const closeWindow = () => {
      if (cpuToAt !== 0) return;
      cpuTo = cpuSecondsOf(o.serverPids);
      busyTo = machineBusySeconds();
      mainTo = o.serverPids.map(mainThreadSample);
      selfUsed = process.cpuUsage(selfFrom);
      cpuToAt = epochMs();
      endWindow();
    };
    const endTimer = setTimeout(closeWindow, Math.max(0, plannedTo - epochMs()));
    void o.stopWhen?.then(() => {
      for (const t of gens) if (t.proc.connected) t.proc.send({ t: 'stop' } satisfies ToGenerator);
      closeWindow();
    });

    const limitMs = (o.warmupS + o.durationS) * 1000 + o.drainTimeoutMs + 30_000;
    let all: GeneratorReport[];
    try {
      all = await waitFor(Promise.all(reports), limitMs, `${o.label}: generator reports`);
    } finally {
      clearTimeout(startTimer);
      clearTimeout(endTimer);
      closeWindow();
    }
    const cpuDrained = cpuSecondsOf(o.serverPids);
    const loop: MetricsSampling = metricsSampling ? await metricsSampling : { loopMaxMs: null, samples: 0, gc: null };
    // This script's own share (probes, IPC) is ours too, not another process's.
    const self = selfUsed === undefined ? 0 : (selfUsed.user + selfUsed.system) / 1e6;
    const machineBusy = busyFrom !== undefined && busyTo !== undefined ? busyTo - busyFrom - self : undefined;
    const seconds = (cpuToAt - cpuFromAt) / 1000;
    return merge(o, all, g, { from: cpuFrom, to: cpuTo, drained: cpuDrained, machineBusy, seconds, mainThreads: mainThreads(mainFrom, mainTo, seconds) }, loop);
  } finally {
    await Promise.all(gens.map((t) => t.stop(2_000)));
  }
}

/**
 * Each server's main thread over the window: its CPU and how often it was
 * switched out while runnable, per second, and the CPU of its busiest other
 * thread; null where a sample is missing.
 */
export function mainThreads(from: readonly (MainThreadSample | undefined)[], to: readonly (MainThreadSample | undefined)[], seconds: number): MainThreadFigures[] | null {
  if (!(seconds > 0) || from.length === 0 || to.length !== from.length) return null;
  const out: MainThreadFigures[] = [];
  const pct = (cpu: number) => Math.round((cpu / seconds) * 1000) / 10;
  for (const [i, a] of from.entries()) {
    const b = to[i];
    if (a === undefined || b === undefined) return null;
    // Threads alive at both ends only: one that started or ended inside the window has no figure for all of it.
    let busiest: number | undefined;
    for (const [tid, cpu] of b.others) {
      const before = a.others.get(tid);
      if (before !== undefined) busiest = Math.max(busiest ?? 0, cpu - before);
    }
    out.push({
      cpuPct: pct(b.cpuSeconds - a.cpuSeconds),
      preemptedPerS: Math.round((b.preempted - a.preempted) / seconds),
      ...(busiest === undefined ? {} : { busiestOtherPct: pct(busiest) }),
    });
  }
  return out;
}

/**
 * The whole machine's busy CPU over the window (less this script's own), and
 * the part of it neither the server processes nor the generators used: other
 * processes, the kernel's interrupt work, a hypervisor's steal. A phase where
 * others took much is a disturbed one.
 */
function machineShare(cpu: { machineBusy: number | undefined; seconds: number }, serverCpu: number | null, generatorCpu: number): PhaseResult['machine'] {
  if (cpu.machineBusy === undefined || !(cpu.seconds > 0)) return { busyPct: null, othersPct: null };
  const busyPct = (cpu.machineBusy / cpu.seconds) * 100;
  const othersPct = serverCpu === null ? null : Math.max(0, ((cpu.machineBusy - serverCpu - generatorCpu) / cpu.seconds) * 100);
  return { busyPct: Math.round(busyPct), othersPct: othersPct === null ? null : Math.round(othersPct) };
}

function merge(
  o: PhaseOptions,
  all: GeneratorReport[],
  generators: number,
  cpu: { from: number[] | undefined; to: number[] | undefined; drained: number[] | undefined; machineBusy: number | undefined; seconds: number; mainThreads: MainThreadFigures[] | null },
  loop: MetricsSampling,
): PhaseResult {
  const hist = mergeHistograms(all.map((r) => r.histogram));
  const errors: Record<string, number> = {};
  const perNode: Record<string, number> = {};
  const ok: number[] = [];
  const errs: number[] = [];
  let sent = 0;
  let okCount = 0;
  let okInWindow = 0;
  let okFromStart = 0;
  let unanswered = 0;
  let forwarded = 0;
  let batchSum = 0;
  let genCpu = 0;
  let loopMax = 0;
  const addInto = (dst: number[], src: readonly number[]) => src.forEach((v, i) => (dst[i] = (dst[i] ?? 0) + v));
  for (const r of all) {
    sent += r.sent;
    okCount += r.ok;
    okInWindow += r.okCompletedInWindow;
    okFromStart += r.okFromWindowStart;
    unanswered += r.unanswered;
    forwarded += r.forwarded;
    batchSum += r.batchSizeSum;
    genCpu += r.cpuSeconds;
    loopMax = Math.max(loopMax, r.loopMaxMs);
    for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    for (const [k, v] of Object.entries(r.perNode)) perNode[k] = (perNode[k] ?? 0) + v;
    addInto(ok, r.timeline.ok);
    addInto(errs, r.timeline.errors);
  }
  const measureFrom = Math.min(...all.map((r) => r.measureFrom));
  const measureTo = Math.max(...all.map((r) => r.measureTo));
  const durationS = Math.max(1e-3, (measureTo - measureFrom) / 1000);
  const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
  const sampled = o.serverPids.length > 0 && cpu.from !== undefined;
  const cpuSeconds = sampled && cpu.to !== undefined ? sum(cpu.to) - sum(cpu.from!) : null;
  const cpuToDrain = sampled && cpu.drained !== undefined ? cpu.drained.map((v, i) => v - cpu.from![i]!) : null;
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  const priorities = mergePriorities(all, durationS);
  const nodeCount = Object.values(perNode).reduce((a, b) => a + b, 0);
  return {
    label: o.label,
    system: o.system,
    model: o.input.model,
    mode: o.mode.kind,
    concurrency: o.mode.kind === 'closed' ? o.mode.concurrency : null,
    offeredRate: o.mode.kind === 'open' ? round(o.mode.rate, 1) : null,
    offeredPctOfCapacity: o.offeredPctOfCapacity ?? null,
    connections: o.target.kind === 'http' && o.mode.kind === 'closed' ? o.mode.concurrency : o.connections,
    generators,
    warmupS: o.warmupS,
    durationS: round(durationS),
    sent,
    ok: okCount,
    throughput: round(okInWindow / durationS, 1),
    errors,
    unanswered,
    latencyMs: summarize(hist),
    histogram: encodeHistogram(hist),
    timeline: { startAt: all[0]!.timeline.startAt, measureFrom, measureTo, bucketMs: 1000, ok, errors: errs },
    perNode,
    forwardedShare: o.target.kind === 'ws' && nodeCount > 0 ? round(forwarded / nodeCount, 4) : null,
    meanBatch: o.system !== 'plain' && okCount > 0 ? round(batchSum / okCount, 2) : null,
    generator: {
      cpuPct: round((genCpu / durationS) * 100, 1),
      loopMaxMs: round(loopMax, 2),
      ...(all.some((r) => r.sendLateHistogram !== undefined) ? { sendLateMs: summarize(mergeHistograms(all.map((r) => r.sendLateHistogram ?? ''))) } : {}),
      ...(all.some((r) => r.sendBufferMaxBytes !== undefined) ? { sendBufferMaxBytes: Math.max(...all.map((r) => r.sendBufferMaxBytes ?? 0)) } : {}),
    },
    machine: machineShare(cpu, cpuSeconds, genCpu),
    server: {
      pids: o.serverPids,
      cpuSeconds: cpuSeconds === null ? null : round(cpuSeconds, 2),
      cpuPct: cpuSeconds === null || cpu.seconds <= 0 ? null : round((cpuSeconds / cpu.seconds) * 100, 1),
      cpuSecondsToDrainByPid: cpuToDrain === null ? null : Object.fromEntries(o.serverPids.map((pid, i) => [String(pid), round(cpuToDrain[i]!, 2)])),
      cpuPerRequestUs: cpuToDrain === null || okFromStart === 0 ? null : round((sum(cpuToDrain) / okFromStart) * 1e6, 1),
      eventLoopDelayMaxMs: loop.loopMaxMs === null ? null : round(loop.loopMaxMs, 2),
      eventLoopSamples: loop.samples,
      gc: loop.gc,
      mainThreads: cpu.mainThreads,
    },
    ...priorities,
  };
}

/** The generators' per-priority and `overloaded` figures, merged; nothing when no generator ran a mix. */
function mergePriorities(all: readonly GeneratorReport[], durationS: number): Pick<PhaseResult, 'byPriority' | 'overloaded'> {
  if (!all.some((r) => r.byPriority !== undefined)) return {};
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  const byPriority: NonNullable<PhaseResult['byPriority']> = {};
  for (const p of PRIORITIES) {
    const parts = all.map((r) => r.byPriority?.[p]).filter((x) => x !== undefined);
    if (parts.length === 0) continue;
    const errors: Record<string, number> = {};
    for (const x of parts) for (const [k, v] of Object.entries(x.errors)) errors[k] = (errors[k] ?? 0) + v;
    const sum = (f: (x: (typeof parts)[number]) => number) => parts.reduce((a, x) => a + f(x), 0);
    const scheduled = sum((x) => x.scheduled);
    const ok = sum((x) => x.ok);
    const hist = mergeHistograms(parts.map((x) => x.histogram));
    const server = mergeHistograms(parts.map((x) => x.serverHistogram));
    const phase: PriorityPhase = {
      scheduled,
      ok,
      okShare: scheduled > 0 ? round(ok / scheduled, 4) : null,
      throughput: round(sum((x) => x.okCompletedInWindow) / durationS, 1),
      errors,
      unanswered: sum((x) => x.unanswered),
      latencyMs: summarize(hist),
      histogram: encodeHistogram(hist),
      serverMs: summarize(server),
    };
    byPriority[p] = phase;
  }
  const ov = all.map((r) => r.overloaded).filter((x) => x !== undefined);
  const hist = mergeHistograms(ov.map((x) => x.histogram));
  const hints = ov.reduce((a, x) => a + x.retryAfterMs.count, 0);
  const reasons: Record<string, number> = {};
  for (const x of ov) for (const [k, v] of Object.entries(x.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  const overloaded: OverloadedAnswers = {
    count: ov.reduce((a, x) => a + x.count, 0),
    latencyMs: summarize(hist),
    histogram: encodeHistogram(hist),
    missingRetryAfter: ov.reduce((a, x) => a + x.missingRetryAfter, 0),
    reasons,
    retryAfterMs: hints === 0 ? null : {
      min: Math.min(...ov.filter((x) => x.retryAfterMs.count > 0).map((x) => x.retryAfterMs.min)),
      mean: round(ov.reduce((a, x) => a + x.retryAfterMs.sum, 0) / hints, 1),
      max: Math.max(...ov.map((x) => x.retryAfterMs.max)),
    },
  };
  return { byPriority, overloaded };
}
