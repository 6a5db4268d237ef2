/**
 * The shape of `results.json`: everything one bench run measured. The
 * report writer (report.ts) renders it; nothing in it depends on how it was
 * measured, so a test can hand the writer a small real run.
 */
import type { CeilingResult } from './ceiling.js';
import type { Priority } from '../src/transport/protocol.js';
import type { LatencySummary } from './histogram.js';
import type { PriorityMix } from './priorityMix.js';

export const RESULTS_SCHEMA = 'actorserve-bench/1';

export type SystemName = 'actorserve' | 'plain' | 'cluster' | 'refuser';

export interface PhaseResult {
  label: string;
  system: SystemName;
  model: string;
  mode: 'closed' | 'open';
  /** Closed loop: requests in flight. */
  concurrency: number | null;
  /** Open loop: offered requests per second, and as a share of the measured capacity it was derived from. */
  offeredRate: number | null;
  offeredPctOfCapacity: number | null;
  connections: number;
  generators: number;
  warmupS: number;
  /** Seconds of the measured window actually run. */
  durationS: number;
  sent: number;
  /** Results of requests sent (scheduled, in open loop) inside the window. */
  ok: number;
  /** Results per second that completed inside the window. */
  throughput: number;
  errors: Record<string, number>;
  /** Measured requests with no answer at the end of the drain (in the latency histogram at their lower bound). */
  unanswered: number;
  /** Latency of measured results, from the (scheduled) send time, ms. */
  latencyMs: LatencySummary;
  /** The same latencies as an HDR histogram (µs), compressed base64: `hdr.decodeFromCompressedBase64`. */
  histogram: string;
  /** Results and errors per `bucketMs` from `startAt` (epoch ms), over the whole run. */
  timeline: { startAt: number; measureFrom: number; measureTo: number; bucketMs: number; ok: number[]; errors: number[] };
  /** Measured results by the node that ran them. */
  perNode: Record<string, number>;
  /** Share of measured results run by another node than the one the client was connected to. */
  forwardedShare: number | null;
  /** Mean batch size the results report (actorserve). */
  meanBatch: number | null;
  generator: {
    cpuPct: number;
    loopMaxMs: number;
    /** How late measured requests left against their schedule (see GeneratorReport.sendLateHistogram). */
    sendLateMs?: LatencySummary;
    /** Open loop with a priority mix: the most bytes one connection held unsent (see GeneratorReport.sendBufferMaxBytes). */
    sendBufferMaxBytes?: number;
  };
  /**
   * The machine over the measured window, in % of one core: all busy CPU (/proc/stat, less the bench script itself), and what
   * was left after the server and the generators (other processes; high means a disturbed phase).
   */
  machine: { busyPct: number | null; othersPct: number | null };
  /** The server processes over the measured window (CPU from /proc/PID/stat utime+stime). */
  server: {
    pids: number[];
    cpuSeconds: number | null;
    /** CPU % of one core over the measured window. */
    cpuPct: number | null;
    /** CPU seconds of each pid from the start of the window until every answer was in. */
    cpuSecondsToDrainByPid: Record<string, number> | null;
    /**
     * CPU from the start of the window until every answer was in ÷ results that arrived in that
     * span: work taken in during the window is charged even when it completes in the drain.
     */
    cpuPerRequestUs: number | null;
    /** Max of `nodejs_eventloop_lag_max_seconds` sampled every 500 ms (prom-client resets it at each scrape), ms. */
    eventLoopDelayMaxMs: number | null;
    eventLoopSamples: number;
    /** Each pid's main thread (its event loop) over the measured window, in `pids` order; null where /proc could not be read. */
    mainThreads: MainThreadFigures[] | null;
    /** GC pauses of the servers' main isolates over the window, per kind (prom-client's `nodejs_gc_duration_seconds`); null without /metrics. Absent in results from before it was measured. */
    gc?: GcPauses | null;
  };
  /** Open loop with a priority mix: each priority of the mix over the measured window. */
  byPriority?: Partial<Record<Priority, PriorityPhase>>;
  /** Open loop with a priority mix: the `overloaded` answers to measured requests. */
  overloaded?: OverloadedAnswers;
}

/** GC pauses by kind (`minor`: scavenges, `major`: mark-compacts, `incremental`, `weakcb`): how many, and their ms in all. */
export type GcPauses = Record<string, { count: number; ms: number }>;

/** A server's main thread over a measured window (/proc/PID/task/PID). */
export interface MainThreadFigures {
  /** CPU % of one core. */
  cpuPct: number;
  /** Times a second it was switched out while it could still run (`nonvoluntary_ctxt_switches`). */
  preemptedPerS: number;
  /** CPU % of one core of the process's busiest other thread over the window: a node's inference thread, serving one thread-run model. */
  busiestOtherPct?: number;
}

/** One priority of an open loop with a priority mix. */
export interface PriorityPhase {
  /** Requests of this priority scheduled inside the measured window: ok + errors + unanswered. */
  scheduled: number;
  ok: number;
  /** ok ÷ scheduled; null when none was scheduled. */
  okShare: number | null;
  /** Results of this priority per second that completed inside the window. */
  throughput: number;
  errors: Record<string, number>;
  unanswered: number;
  /** Latency of its results (errors left out; unanswered at their lower bound), from the scheduled send, ms. */
  latencyMs: LatencySummary;
  histogram: string;
  /**
   * The server's own time of the same results (`timings.totalMs`: from its receipt of the request to the result), ms.
   * Latency less this is time outside the server's queue: in the client's send buffer, in TCP, before the server read it.
   */
  serverMs: LatencySummary;
}

export interface OverloadedAnswers {
  count: number;
  /** From the scheduled send to the `overloaded` answer, ms. */
  latencyMs: LatencySummary;
  histogram: string;
  /** Answers without a usable `retryAfterMs`. */
  missingRetryAfter: number;
  /** Answers by the server's message (its reason for refusing), every number in it written N. */
  reasons: Record<string, number>;
  /** The hints given, ms; null when none was. */
  retryAfterMs: { min: number; mean: number; max: number } | null;
}

export interface ModelResults {
  model: string;
  concurrency: number;
  ceiling: CeilingResult | null;
  plain: { closed: PhaseResult | null; sweep: PhaseResult[] };
  actorserve: { closed: PhaseResult | null; sweep: PhaseResult[] };
  /** actorserve ÷ baseline; null where a side is missing. Latency ratios: below 1 means actorserve is faster. */
  ratios: {
    throughputVsCeilingBest: number | null;
    throughputVsCeilingBatch1: number | null;
    throughputVsPlain: number | null;
    p50VsPlain: number | null;
    p99VsPlain: number | null;
    plainThroughputVsCeilingBatch1: number | null;
  };
}

export interface TimelineEvent {
  /** Seconds from the start of the phase's timeline. */
  atS: number;
  label: string;
}

export interface ClusterResults {
  nodes: number;
  model: string;
  /** Open-loop rate of the CPU comparison, req/s, and as % of one node's closed-loop capacity. */
  rate: number;
  ratePctOfSoloCapacity: number;
  soloCapacity: number;
  solo: PhaseResult | null;
  /** Clients spread over every node (what a load balancer in front does). */
  spread: PhaseResult | null;
  /** Every client on the first node: the others are reached only through routing. */
  entry: PhaseResult | null;
  /**
   * The same number of nodes started alone (no seeds: no cluster), clients
   * spread over them as in `spread`: what that many processes, each at a
   * share of the load, cost on these cores without any clustering.
   */
  separate: PhaseResult | null;
  /** CPU per request ÷ one node's CPU per request (target for the cluster layouts: at most `target`). */
  cpuPerRequestRatio: { spread: number | null; entry: number | null; separate: number | null };
  /** Cluster CPU per request ÷ that of the separate nodes: the cost of the clustering itself. */
  vsSeparate: { spread: number | null; entry: number | null };
  target: number;
  meetsTarget: boolean | null;
  join: { node: string; spawnToReadyMs: number | null; spawnToFirstResultMs: number | null } | null;
  kill: { node: string; survivor: string; killToDownMs: number | null } | null;
  /** Closed-loop run through the join and the kill, with its events. */
  churn: (PhaseResult & { events: TimelineEvent[] }) | null;
}

/** The overload phase (bench/overload.ts): one fresh node, one model, open loop at `factor` × its peak. */
export interface OverloadResults {
  model: string;
  factor: number;
  mix: PriorityMix;
  /**
   * Closed-loop throughput on the overload node just before the overload
   * ('measured here'); runs before the bracketing took it from the run's
   * earlier closed-loop phase ('earlier phase').
   */
  closedLoop: { throughput: number; source: 'earlier phase' | 'measured here' } | null;
  /** The same closed loop on the same node right after the overload (absent in runs before it). */
  closedLoopAfter?: number | null;
  /** The model's throughput in the run's earlier closed-loop phase (another node process, minutes earlier), for reference. */
  earlierClosedLoop?: number | null;
  /** Open loop at 100% of the closed-loop throughput, on the overload node. */
  openAtPeak: PhaseResult | null;
  /** What the offered loads are shares of: max(closed loop before, open loop at 100%), or the closed loop after a first try (`firstTry`), req/s (absent in runs before it: `peak`). */
  offeredBasis?: number;
  /** The peak goodput is judged against: max(offeredBasis, the closed loops after), req/s, and which it is. */
  peak: number;
  peakSource: 'closed loop' | 'open loop at 100%' | 'closed loop after' | null;
  /** Open loop at `unloadedPct`% of peak, the same mix: the reference latencies. */
  unloadedPct: number;
  unloaded: PhaseResult | null;
  /** Open loop at factor × peak. */
  overload: PhaseResult | null;
  /**
   * When the closed loop after the overload ran over `rerunAbove` × the basis
   * its rate was set from, the overload and that closed loop were run again at
   * factor × it (`offeredBasis` is then that closed loop): the first try, kept
   * for the report. Absent when the first basis held, and in runs before it.
   */
  firstTry?: { rerunAbove: number; offeredBasis: number; overload: PhaseResult; closedLoopAfter: number };
  /**
   * The same open loop against bench/refuser.ts, a WebSocket server that
   * refuses every request at once: the floor the generator and these cores
   * put under the time to an `overloaded` answer. Absent in runs before it.
   */
  refusalFloor?: PhaseResult | null;
  /**
   * The same against bench/refuser.ts with one thread spinning beside it at
   * the node's inference nice, as its inference thread does under overload:
   * the floor once the machine also computes. Absent in runs before it.
   */
  refusalFloorBusy?: PhaseResult | null;
  /** The three targets: value, bound and whether it holds (null: not measured). */
  targets: {
    /** Results per second completed inside the overload window ÷ peak; at least `min`. */
    goodputVsPeak: { value: number | null; min: number; met: boolean | null };
    /** p99 from the scheduled send to an `overloaded` answer, ms; below `max`. */
    overloadedP99Ms: { value: number | null; max: number; met: boolean | null };
    /** High-priority p99 under overload ÷ unloaded high-priority p99; below `max`. */
    highP99VsUnloaded: { value: number | null; max: number; met: boolean | null };
  };
  /** The node's resident memory (VmRSS): before the overload, the max sampled during it (every 250 ms), after the drain; MiB. */
  rssMiB: { before: number | null; max: number | null; after: number | null };
  /** A few requests of every priority on a fresh connection after the overload drained. */
  after: { sent: number; ok: number; errors: Record<string, number> } | null;
}

export interface BenchError {
  phase: string;
  message: string;
}

export interface BenchResults {
  schema: typeof RESULTS_SCHEMA;
  startedAt: string;
  finishedAt: string;
  /** As typed: `npm run bench -- ARGS` runs `node dist/bench/bench.js ARGS`. */
  commandLine: string;
  options: Record<string, unknown>;
  machine: {
    node: string;
    platform: string;
    arch: string;
    cpuModel: string;
    cpus: number;
    totalMemGiB: number;
    loadAverageAtStart: number[];
    loadAverageAtEnd: number[];
    onnxruntime: string;
  };
  models: ModelResults[];
  cluster: ClusterResults | null;
  /** Null when skipped (`--overload none`) or when the run predates the phase. */
  overload: OverloadResults | null;
  /**
   * Runs 2 to N of the overload phase with `--overload-runs N` (each on a
   * fresh node; null for one that failed, its error in `errors`); `overload`
   * is run 1. Absent with one run, and in runs before the option.
   */
  overloadRepeats?: (OverloadResults | null)[];
  /** Every process the bench started (all stopped before it wrote this file). */
  processes: { role: string; pid: number }[];
  errors: BenchError[];
}
