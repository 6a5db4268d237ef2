/**
 * The bench's command line: defaults first, `--quick` defaults second,
 * explicit flags last; every value is checked at once (RangeError with the
 * flag's name).
 */
import { parseArgs } from 'node:util';
import { parsePriorityMix, type PriorityMix } from './priorityMix.js';

export const USAGE = `usage: npm run bench -- [options]        (build first: npm run build)

Measures actorserve against two baselines in one run and writes
bench/results/<timestamp>/{results.json,summary.md,*.svg}:
  1. the in-process ceiling: onnxruntime-node on one thread with the node's
     settings (resolveModels: model file, intra-op threads), best batch size;
  2. a plain HTTP JSON server (bench/plainServer.ts: node:http, one session.run
     per request on the main thread, no batching), its own process;
  3. actorserve: one node (node bin/actorserve.js node ...), its own process;
     closed loop at the same concurrency as the plain server, then an open-loop
     sweep of both servers at shares of actorserve's measured capacity;
  4. a local cluster (--cluster N, iris, keyless): CPU per request of N nodes
     vs one node alone at the same open-loop rate (CPU from /proc/PID/stat),
     then, under closed-loop load, a node joining (spawn → first result) and a
     node SIGKILLed (kill → marked down on a survivor's GET /v1/cluster);
  5. overload (--overload MODEL): a fresh node serving MODEL; its closed-loop
     throughput and an open loop at 100% of it (the higher is what loads are
     offered as shares of), then open loops with a priority mix at 10% and at
     F × that, then the closed loop again: peak is the highest of the three,
     all measured on this node around the overload; reports goodput ÷ peak, time to an "overloaded" answer and
     high-priority p99 against unloaded, then checks the node still answers;
     last, the same overload against bench/refuser.ts (refuses every request
     at once): the floor this generator and these cores put under the time
     to an "overloaded" answer.
The load generator runs in its own child process(es) over WebSocket (actorserve)
or HTTP/1.1 keep-alive (plain server); latency goes into HDR histograms, the
warm-up is left out, and open-loop latency counts from the scheduled send time
(or the actual send, when the generator sent up to 1 ms ahead of it).

Options (defaults; --quick defaults in brackets):
  --models A,B          models to bench (iris,text-orientation)
  --duration S          measured seconds per closed-loop phase and per cluster
                        CPU phase (4) [1]
  --warmup S            warm-up before every phase, not measured (1) [0.3]
  --sweep P,P,...       open-loop rates as % of actorserve's closed-loop
                        throughput; "none" skips the sweep (25,50,75,100,150) [50,150]
  --sweep-duration S    measured seconds per sweep point (2) [1]
  --concurrency N       requests in flight in closed loop, for actorserve and the
                        plain server alike (per model: iris 256, text-orientation 32)
  --connections N       WebSocket connections to actorserve, and pipelined HTTP
                        connections in open loop (1: the targets are stated for
                        one connection); closed-loop HTTP uses one connection
                        per request in flight
  --generators N        load-generator processes (1); concurrency and rate are
                        split between them and their histograms merged
  --ceiling-batches B,B batch sizes for the in-process ceiling (1,4,8,16,32)
  --ceiling-seconds S   seconds per ceiling batch size (0.5) [0.2]
  --cluster N           nodes in the cluster phase; 0 or 1 skips it (3)
  --cluster-rate P      open-loop rate of the CPU comparison, % of one node's
                        iris capacity (50)
  --overload MODEL      model of the overload phase; "none" skips it
                        (text-orientation: inference-bound, so the generator on
                        the same cores can offer a multiple of its capacity)
  --overload-factor F   offered load of the overload phase as a multiple of
                        peak (3)
  --overload-mix H,N,L  shares of high, normal and low priority requests in the
                        overload phase's open loops, normalised (0.1,0.6,0.3);
                        its measured seconds follow --sweep-duration
  --overload-warmup S   seconds of the overload before its measured window, and
                        of the refusal floors' loops (3) [0.5]; at least until
                        the model queue would have filled
  --overload-rerun-above R
                        run the overload once more, at F × the closed loop
                        after it, when that closed loop ran over R × the rate's
                        basis (the node was offered well under F × its peak);
                        0 always does (1.1)
  --overload-runs N     run the whole overload phase N times, each on a fresh
                        node, one after another; the report adds a table of
                        every run's targets with their medians and how many
                        runs met each, and gives the first run in full (1)
  --node-args "A B"     extra flags for every actorserve node the bench starts,
                        e.g. "--inference-nice 0 --max-batch 8" (none)
  --no-plain            skip the plain HTTP server
  --out DIR             write the report here (bench/results/<timestamp>)
  --quick               smoke run of every phase, about 60 s on 2 cores
  -h, --help            this text

Every load loop is bounded in count and time; every child process is stopped
by its pid at the end, on error and on SIGINT/SIGTERM.`;

export interface BenchOptions {
  models: string[];
  durationS: number;
  warmupS: number;
  sweepPct: number[];
  sweepDurationS: number;
  concurrency: Record<string, number>;
  connections: number;
  generators: number;
  ceilingBatches: number[];
  ceilingSeconds: number;
  cluster: number;
  /** Extra flags for every actorserve node the bench starts. */
  nodeArgs: string[];
  clusterRatePct: number;
  /** Model of the overload phase; null skips it. */
  overload: string | null;
  overloadFactor: number;
  overloadMix: PriorityMix;
  /** Seconds of the overload (and of the refusal floors' loops) before their measured windows. */
  overloadWarmupS: number;
  /** The overload runs again when the closed loop after it ran over this many times its basis. */
  overloadRerunAbove: number;
  /** Times the whole overload phase runs, each on a fresh node. */
  overloadRuns: number;
  plain: boolean;
  out: string | undefined;
  quick: boolean;
  help: boolean;
}

/**
 * The overload's warm-up: long enough for the node and the generator to reach
 * their steady state. Measured on text-orientation at 3× (a /tmp harness of
 * this bench's generator, one fresh node, 5 runs, results per second from the
 * first send against a closed-loop ~1,000 req/s): 56–58 % of it in the first
 * second, while V8 compiled the refusal path on four helper threads beside the
 * event loop, the fresh generator's own code warmed up (37–43 % of a core
 * against 20–25 % later) and the inference thread, at nice 10, waited to run
 * for 25–45 % of the time; 71–80 % in the second; 84–92 % in the third, steady
 * from about 2.3 s on. A node already through one overload ran up no faster
 * the second time (57 % then 59 % in the first second), so the node's own
 * warm-up is the smaller part of it. With a 1 s warm-up the 2 s window held
 * most of that run-up: goodput 76–90 % over 8 runs of the bench; with 3 s,
 * 89–98 % over 10.
 */
export const DEFAULT_OVERLOAD_WARMUP_S = 3;

/**
 * The overload runs once more, at factor × the closed loop after it, when
 * that closed loop ran over this many times the basis its rate was set from:
 * the node had been offered well under factor × its peak. Over 208 runs of
 * the phase (stops 17–22) the closed loop after ran over 1.1× the one before
 * in 43, by up to 1.48×, and under 0.9× in 20.
 */
export const DEFAULT_RERUN_ABOVE = 1.1;

/** Runs of the overload phase at most (`--overload-runs`): about a minute each. */
const MAX_OVERLOAD_RUNS = 100;

export const DEFAULT_CONCURRENCY: Record<string, number> = { iris: 256, 'text-orientation': 32 };
const FALLBACK_CONCURRENCY = 32;

/** Closed-loop requests in flight for `model` when --concurrency is not given. */
export const defaultConcurrency = (model: string): number => DEFAULT_CONCURRENCY[model] ?? FALLBACK_CONCURRENCY;

function positive(flag: string, s: string): number {
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n <= 0) throw new RangeError(`--${flag} must be a positive number, got ${JSON.stringify(s)}`);
  return n;
}

function nonNegative(flag: string, s: string): number {
  const n = Number(s);
  if (s.trim() === '' || !Number.isFinite(n) || n < 0) throw new RangeError(`--${flag} must be a number of at least 0, got ${JSON.stringify(s)}`);
  return n;
}

function positiveInt(flag: string, s: string, max = 1_000_000): number {
  const n = positive(flag, s);
  if (!Number.isInteger(n) || n > max) throw new RangeError(`--${flag} must be an integer in 1..${max}, got ${JSON.stringify(s)}`);
  return n;
}

function list(flag: string, s: string, each: (flag: string, v: string) => number): number[] {
  const parts = s.split(',').map((x) => x.trim()).filter(Boolean);
  if (parts.length === 0) throw new RangeError(`--${flag} is empty`);
  return parts.map((p) => each(flag, p));
}

/** @throws RangeError for a bad value, TypeError (from parseArgs) for an unknown flag. */
export function parseOptions(argv: string[]): BenchOptions {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      models: { type: 'string' },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      sweep: { type: 'string' },
      'sweep-duration': { type: 'string' },
      concurrency: { type: 'string' },
      connections: { type: 'string' },
      generators: { type: 'string' },
      'ceiling-batches': { type: 'string' },
      'ceiling-seconds': { type: 'string' },
      cluster: { type: 'string' },
      'cluster-rate': { type: 'string' },
      overload: { type: 'string' },
      'overload-factor': { type: 'string' },
      'overload-mix': { type: 'string' },
      'overload-warmup': { type: 'string' },
      'overload-rerun-above': { type: 'string' },
      'overload-runs': { type: 'string' },
      'node-args': { type: 'string' },
      'no-plain': { type: 'boolean', default: false },
      out: { type: 'string' },
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  const quick = values.quick;
  const models = (values.models ?? 'iris,text-orientation').split(',').map((s) => s.trim()).filter(Boolean);
  if (models.length === 0) throw new RangeError('--models is empty');
  const concurrency: Record<string, number> = {};
  const c = values.concurrency === undefined ? undefined : positiveInt('concurrency', values.concurrency, 100_000);
  for (const m of models) concurrency[m] = c ?? defaultConcurrency(m);
  const cluster = values.cluster === undefined ? 3 : values.cluster === '0' ? 0 : positiveInt('cluster', values.cluster, 16);
  const overload = (values.overload ?? 'text-orientation').trim();
  if (overload === '') throw new RangeError('--overload is empty (a model, or "none")');
  const sweep = values.sweep ?? (quick ? '50,150' : '25,50,75,100,150');
  return {
    models,
    durationS: values.duration === undefined ? (quick ? 1 : 4) : positive('duration', values.duration),
    warmupS: values.warmup === undefined ? (quick ? 0.3 : 1) : values.warmup === '0' ? 0 : positive('warmup', values.warmup),
    sweepPct: sweep === 'none' ? [] : list('sweep', sweep, positive),
    sweepDurationS: values['sweep-duration'] === undefined ? (quick ? 1 : 2) : positive('sweep-duration', values['sweep-duration']),
    concurrency,
    connections: values.connections === undefined ? 1 : positiveInt('connections', values.connections, 1024),
    generators: values.generators === undefined ? 1 : positiveInt('generators', values.generators, 16),
    ceilingBatches: list('ceiling-batches', values['ceiling-batches'] ?? '1,4,8,16,32', (f, v) => positiveInt(f, v, 4096)),
    ceilingSeconds: values['ceiling-seconds'] === undefined ? (quick ? 0.2 : 0.5) : positive('ceiling-seconds', values['ceiling-seconds']),
    cluster,
    nodeArgs: (values['node-args'] ?? '').split(/\s+/).filter(Boolean),
    clusterRatePct: values['cluster-rate'] === undefined ? 50 : positive('cluster-rate', values['cluster-rate']),
    overload: overload === 'none' ? null : overload,
    overloadFactor: values['overload-factor'] === undefined ? 3 : positive('overload-factor', values['overload-factor']),
    overloadMix: parsePriorityMix(values['overload-mix'] ?? '0.1,0.6,0.3'),
    overloadWarmupS: values['overload-warmup'] === undefined ? (quick ? 0.5 : DEFAULT_OVERLOAD_WARMUP_S) : positive('overload-warmup', values['overload-warmup']),
    overloadRerunAbove: values['overload-rerun-above'] === undefined ? DEFAULT_RERUN_ABOVE : nonNegative('overload-rerun-above', values['overload-rerun-above']),
    overloadRuns: values['overload-runs'] === undefined ? 1 : positiveInt('overload-runs', values['overload-runs'], MAX_OVERLOAD_RUNS),
    plain: !values['no-plain'],
    out: values.out,
    quick,
    help: values.help,
  };
}
