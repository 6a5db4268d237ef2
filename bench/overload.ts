/**
 * The overload phase: one fresh node serving one model, driven past its
 * capacity with a priority mix, against three targets:
 *
 *  - goodput: results per second completed inside the window at
 *    `factor` × peak, at least 90% of peak;
 *  - refusals are quick: p99 from the scheduled send to an `overloaded`
 *    answer under 5 ms;
 *  - admitted high-priority work keeps its latency: its p99 under overload
 *    below 3× its p99 at 10% of peak.
 *
 * Peak is the highest of the node's closed-loop throughput just before the
 * overload (after an unrecorded warm-up of the fresh node), the same just
 * after it, and what an open loop at 100% of the first completes: measured
 * on this node around the overload, not minutes earlier in the run, because
 * the speed of a shared VM drifts by tens of percent within minutes (a closed
 * loop measured at a fast moment judged an overload run at a slow one).
 * Offered loads are shares of the two measured before the overload; when the
 * closed loop after it runs over `--overload-rerun-above` (1.1) × that, the
 * node was offered well under factor × its peak, and the overload and the
 * closed loop after it run once more, at factor × that closed loop. The
 * overload's warm-up (`--overload-warmup`, 3 s) lasts until the node and the
 * generator have warmed up and the model queue would have filled, so the
 * measured window sees the steady state of an overloaded node, not the
 * run-up to it; the report shows the run-up second by second. Afterwards a
 * few requests on a fresh connection check that the node still serves.
 */
import { Client } from '../src/client/Client.js';
import { ActorserveError } from '../src/errors.js';
import { DEFAULT_INFERENCE_NICE } from '../src/models/registry.js';
import { PRIORITIES } from '../src/transport/protocol.js';
import { runPhase, type PhaseOptions } from './loadPhase.js';
import type { ModelInput } from './payload.js';
import { sampleInput } from './payload.js';
import type { PriorityMix } from './priorityMix.js';
import { freePorts, rssBytes } from './processes.js';
import type { BenchError, OverloadResults, PhaseResult } from './results.js';
import { startActorserveNode, startRefuser, type RunningServer } from './servers.js';

export const GOODPUT_MIN = 0.9;
export const OVERLOADED_P99_MAX_MS = 5;
export const HIGH_P99_RATIO_MAX = 3;
/** The unloaded reference: open loop at this share of peak. */
export const UNLOADED_PCT = 10;
/** High-priority results the unloaded reference aims for (the p99 of fewer than 100 is their max)... */
const UNLOADED_HIGH_SAMPLES = 200;
/** ...running at most this many times the sweep duration for them. */
const UNLOADED_MAX_STRETCH = 10;
/** The wait for the queue to fill is at most this long, however slowly it fills. */
const MAX_FILL_WARMUP_S = 5;
const RSS_SAMPLE_MS = 250;
/** Requests of each priority sent after the overload, and how long they may take. */
const AFTER_PER_PRIORITY = 3;
const AFTER_TIMEOUT_MS = 10_000;

export interface OverloadOptions {
  input: ModelInput;
  /** The model's queue cap on one node (`batching.maxQueue`): how much backlog can pile up. */
  maxQueue: number;
  factor: number;
  mix: PriorityMix;
  /** The model's closed-loop throughput measured earlier in this run, for reference; null when there was none. */
  earlierClosedThroughput: number | null;
  /** Closed loop: requests in flight. */
  concurrency: number;
  connections: number;
  generators: number;
  warmupS: number;
  /** The overload's warm-up (at least; longer if the model queue takes longer to fill), and the refusal floors'. */
  overloadWarmupS: number;
  /** The overload runs again, at factor × the closed loop after it, when that ran over this many times its basis. */
  rerunAbove: number;
  /** Measured seconds of a closed loop run here. */
  durationS: number;
  /** Measured seconds of each open loop. */
  sweepDurationS: number;
  /** The bench's drain allowance for a phase of `durationS` measured seconds. */
  drainMs: (durationS: number) => number;
  log: (line: string) => void;
  errors: BenchError[];
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const mib = (b: number | undefined) => (b === undefined ? null : round(b / 2 ** 20, 1));

function note(o: OverloadOptions, phase: string, e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  o.errors.push({ phase, message });
  o.log(`  ${phase} failed: ${message.split('\n')[0]}`);
}

/** The three targets from the measured phases; a target whose inputs are missing is null. */
export function overloadTargets(peak: number, unloaded: PhaseResult | null, overload: PhaseResult | null): OverloadResults['targets'] {
  const goodput = overload !== null && peak > 0 ? round(overload.throughput / peak, 4) : null;
  const refusals = overload?.overloaded;
  const refusalP99 = refusals !== undefined && refusals.count > 0 ? refusals.latencyMs.p99 : null;
  const hiUnloaded = unloaded?.byPriority?.high?.latencyMs;
  const hiOverload = overload?.byPriority?.high?.latencyMs;
  const hiRatio = hiUnloaded !== undefined && hiOverload !== undefined && hiUnloaded.count > 0 && hiOverload.count > 0 && hiUnloaded.p99 > 0
    ? round(hiOverload.p99 / hiUnloaded.p99, 3)
    : null;
  return {
    goodputVsPeak: { value: goodput, min: GOODPUT_MIN, met: goodput === null ? null : goodput >= GOODPUT_MIN },
    overloadedP99Ms: { value: refusalP99, max: OVERLOADED_P99_MAX_MS, met: refusalP99 === null ? null : refusalP99 < OVERLOADED_P99_MAX_MS },
    highP99VsUnloaded: { value: hiRatio, max: HIGH_P99_RATIO_MAX, met: hiRatio === null ? null : hiRatio < HIGH_P99_RATIO_MAX },
  };
}

/** The basis to run the overload again from (the closed loop after it), or null when the first run's basis held. */
export function rerunBasis(basis: number, closedLoopAfter: number | null, above: number): number | null {
  return closedLoopAfter !== null && closedLoopAfter > above * basis ? closedLoopAfter : null;
}

/** Sends a few requests of every priority on a fresh connection; counts answers by outcome. */
async function serveAfter(url: string, input: ModelInput): Promise<NonNullable<OverloadResults['after']>> {
  const client = await Client.connect(url, { timeoutMs: AFTER_TIMEOUT_MS });
  try {
    const data = sampleInput(input.model, input.rowShape, 1);
    const inputs = { [input.inputName]: { data, shape: [1, ...input.rowShape] } };
    const signal = AbortSignal.timeout(AFTER_TIMEOUT_MS);
    const all = PRIORITIES.flatMap((priority) => Array.from({ length: AFTER_PER_PRIORITY }, () => client.infer(input.model, inputs, { priority, signal })));
    const settled = await Promise.allSettled(all);
    const errors: Record<string, number> = {};
    let ok = 0;
    for (const s of settled) {
      if (s.status === 'fulfilled') ok++;
      else {
        const code = s.reason instanceof ActorserveError ? s.reason.code : 'client_error';
        errors[code] = (errors[code] ?? 0) + 1;
      }
    }
    return { sent: all.length, ok, errors };
  } finally {
    await client.close();
  }
}

/** Runs the phase; what fails is noted in `o.errors` and left null in the result. */
export async function runOverload(o: OverloadOptions): Promise<OverloadResults> {
  const model = o.input.model;
  const result: OverloadResults = {
    model,
    factor: o.factor,
    mix: o.mix,
    closedLoop: null,
    closedLoopAfter: null,
    earlierClosedLoop: o.earlierClosedThroughput,
    openAtPeak: null,
    peak: 0,
    peakSource: null,
    unloadedPct: UNLOADED_PCT,
    unloaded: null,
    overload: null,
    refusalFloor: null,
    refusalFloorBusy: null,
    targets: overloadTargets(0, null, null),
    rssMiB: { before: null, max: null, after: null },
    after: null,
  };
  o.log(`overload (${model}): starting a fresh node ...`);
  let node: RunningServer;
  try {
    const [port] = await freePorts(1);
    node = await startActorserveNode({ id: 'overload', port: port!, models: [model] });
  } catch (e) {
    note(o, `overload ${model}: node start`, e);
    return result;
  }
  const url = `ws://127.0.0.1:${node.port}/v1/stream`;
  const phase = (p: Pick<PhaseOptions, 'label' | 'mode' | 'warmupS' | 'durationS' | 'drainTimeoutMs'> & { offeredPctOfCapacity?: number }) =>
    runPhase({
      ...p, system: 'actorserve', target: { kind: 'ws', urls: [url] }, input: o.input, connections: o.connections, generators: o.generators,
      serverPids: [node.proc.pid], metricsUrls: [`${node.base}/metrics`],
    });
  /** Time for the model queue's backlog to be worked off at `rate`, with room to spare, within the bench's bounds. */
  const backlogDrainMs = (rate: number, durationS: number) => Math.min(20_000, Math.max(o.drainMs(durationS), 1_500 * (o.maxQueue / Math.max(1, rate)) + 1_000));
  try {
    // Peak, part 1: the closed loop (also the fresh node's warm-up).
    const closedLoop = async (when: string) => {
      o.log(`overload: closed loop ${when}, ${o.concurrency} in flight, ${o.warmupS}+${o.durationS} s ...`);
      const closed = await phase({ label: `overload ${model}: closed loop ${when}`, mode: { kind: 'closed', concurrency: o.concurrency }, warmupS: o.warmupS, durationS: o.durationS, drainTimeoutMs: o.drainMs(o.durationS) });
      return closed.throughput > 0 ? closed.throughput : null;
    };
    // A fresh node runs slower for its first seconds (cold code paths, a small heap that V8 grows as the
    // tensors come): without a warm-up the closed loop before the overload gave 6–30% less than the one
    // after it in every run, so the offered loads were shares of a cold node's throughput.
    o.log(`overload: warm-up, closed loop of ${o.concurrency}, ${2 * o.warmupS} s, not recorded ...`);
    await phase({ label: `overload ${model}: warm-up (not recorded)`, mode: { kind: 'closed', concurrency: o.concurrency }, warmupS: 0, durationS: Math.max(1, 2 * o.warmupS), drainTimeoutMs: o.drainMs(o.durationS) });
    const before = await closedLoop('before');
    if (before === null) throw new Error('no closed-loop throughput to derive the offered loads from');
    result.closedLoop = { throughput: before, source: 'measured here' };

    // Peak, part 2: an open loop at 100%, which may batch fuller than the closed loop's fixed window.
    try {
      o.log(`overload: open loop at 100% (${Math.round(before)} req/s), ${o.warmupS}+${o.sweepDurationS} s ...`);
      result.openAtPeak = await phase({
        label: `overload ${model}: open loop 100%`, mode: { kind: 'open', rate: before, mix: o.mix }, offeredPctOfCapacity: 100,
        warmupS: o.warmupS, durationS: o.sweepDurationS, drainTimeoutMs: backlogDrainMs(before, o.sweepDurationS),
      });
    } catch (e) {
      note(o, `overload ${model}: open loop 100%`, e);
    }
    const openTp = result.openAtPeak?.throughput ?? 0;
    const basis = Math.max(before, openTp);
    result.offeredBasis = basis;
    result.peak = basis;
    result.peakSource = openTp > before ? 'open loop at 100%' : 'closed loop';

    // The unloaded reference, long enough for a p99 of high priority that is not just its max.
    try {
      const rate = Math.max(1, (basis * UNLOADED_PCT) / 100);
      const highRate = rate * o.mix.high;
      const durationS = highRate > 0
        ? Math.min(UNLOADED_MAX_STRETCH * o.sweepDurationS, Math.max(o.sweepDurationS, UNLOADED_HIGH_SAMPLES / highRate))
        : o.sweepDurationS;
      o.log(`overload: unloaded reference, open loop at ${Math.round(rate)} req/s (${UNLOADED_PCT}% of peak), ${o.warmupS}+${round(durationS, 1)} s ...`);
      result.unloaded = await phase({
        label: `overload ${model}: open loop ${UNLOADED_PCT}%`, mode: { kind: 'open', rate, mix: o.mix }, offeredPctOfCapacity: UNLOADED_PCT,
        warmupS: o.warmupS, durationS, drainTimeoutMs: o.drainMs(durationS),
      });
    } catch (e) {
      note(o, `overload ${model}: unloaded reference`, e);
    }

    // The overload, measured once the node and the generator are warm and the queue would be full at the excess rate.
    let rssMax = 0;
    const overloadAt = async (from: number): Promise<PhaseResult | null> => {
      const rate = from * o.factor;
      const fillS = o.maxQueue / Math.max(1, rate - from);
      const warmupS = round(Math.max(o.overloadWarmupS, Math.min(MAX_FILL_WARMUP_S, 1.5 * fillS)), 2);
      const rssTimer = setInterval(() => (rssMax = Math.max(rssMax, rssBytes(node.proc.pid) ?? 0)), RSS_SAMPLE_MS);
      try {
        o.log(`overload: open loop at ${Math.round(rate)} req/s (${o.factor}× peak ${Math.round(from)}), ${warmupS}+${o.sweepDurationS} s ...`);
        return await phase({
          label: `overload ${model}: open loop ${o.factor}× peak`, mode: { kind: 'open', rate, mix: o.mix }, offeredPctOfCapacity: round(o.factor * 100, 1),
          warmupS, durationS: o.sweepDurationS, drainTimeoutMs: backlogDrainMs(from, o.sweepDurationS),
        });
      } catch (e) {
        note(o, `overload ${model}: open loop ${o.factor}× peak`, e);
        return null;
      } finally {
        clearInterval(rssTimer);
        result.rssMiB.after = mib(rssBytes(node.proc.pid));
      }
    };
    // Peak, part 3: the closed loop again, right after: goodput is judged against the fastest the node ran around it.
    const closedAfter = async (): Promise<number | null> => {
      try {
        return await closedLoop('after');
      } catch (e) {
        note(o, `overload ${model}: closed loop after`, e);
        return null;
      }
    };
    result.rssMiB.before = mib(rssBytes(node.proc.pid));
    result.overload = await overloadAt(basis);
    result.closedLoopAfter = await closedAfter();
    const again = rerunBasis(basis, result.closedLoopAfter, o.rerunAbove);
    if (again !== null && result.overload !== null) {
      // The node ran faster after the overload than where its rate was set: it was offered less than factor × peak.
      o.log(`overload: the closed loop after ran ${Math.round(again)} req/s, over ${o.rerunAbove}× the ${Math.round(basis)} the rate was set from: the overload again at ${o.factor}× ${Math.round(again)} ...`);
      result.firstTry = { rerunAbove: o.rerunAbove, offeredBasis: basis, overload: result.overload, closedLoopAfter: again };
      result.offeredBasis = again;
      result.overload = await overloadAt(again);
      result.closedLoopAfter = await closedAfter();
    }
    result.rssMiB.max = rssMax > 0 ? mib(rssMax) : null;
    const fastest = Math.max(result.closedLoopAfter ?? 0, result.firstTry?.closedLoopAfter ?? 0);
    if (fastest > basis) {
      result.peak = fastest;
      result.peakSource = 'closed loop after';
    }
    result.targets = overloadTargets(result.peak, result.unloaded, result.overload);

    try {
      result.after = await serveAfter(url, o.input);
      o.log(`overload: after the overload, ${result.after.ok} of ${result.after.sent} requests answered`);
    } catch (e) {
      note(o, `overload ${model}: requests after the overload`, e);
    }
  } catch (e) {
    note(o, `overload ${model}`, e);
  } finally {
    o.log('overload: stopping the node ...');
    await node.proc.stop();
  }
  if (result.overload !== null) {
    const rate = result.overload.offeredRate ?? result.offeredBasis! * o.factor;
    result.refusalFloor = await refusalFloor(o, rate);
    result.refusalFloorBusy = await refusalFloor(o, rate, DEFAULT_INFERENCE_NICE);
  }
  return result;
}

/**
 * The overload's open loop again, against a server that refuses everything
 * at once (bench/refuser.ts); with `busyNice`, while a thread spins beside it
 * at that nice.
 */
async function refusalFloor(o: OverloadOptions, rate: number, busyNice?: number): Promise<PhaseResult | null> {
  const label = `overload ${o.input.model}: refusal floor${busyNice === undefined ? '' : `, beside a busy thread at nice ${busyNice}`}`;
  let server: RunningServer | undefined;
  try {
    const [port] = await freePorts(1);
    server = await startRefuser(port!, busyNice);
    o.log(`${label}: the same open loop (${Math.round(rate)} req/s) against a server that refuses at once ...`);
    return await runPhase({
      label, system: 'refuser', target: { kind: 'ws', urls: [`ws://127.0.0.1:${port}/v1/stream`] },
      input: o.input, connections: o.connections, generators: o.generators, mode: { kind: 'open', rate, mix: o.mix },
      offeredPctOfCapacity: round(o.factor * 100, 1), warmupS: o.overloadWarmupS, durationS: o.sweepDurationS, drainTimeoutMs: o.drainMs(o.sweepDurationS),
      serverPids: [server.proc.pid], metricsUrls: [],
    });
  } catch (e) {
    note(o, label, e);
    return null;
  } finally {
    if (server !== undefined) await server.proc.stop();
  }
}
