/**
 * The chaos scenarios and their runner. Each scenario runs on a real
 * three-node cluster (one OS process per node, on loopback): steady
 * streaming load from clients on one node (paced, bounded windows; in the
 * node scenarios also a closed loop, so the faulted node always holds work),
 * a fault injected through the node's chaos API, a signal, or the fault
 * proxy in front of a node, then the report: requests sent, results, errors
 * by code, lost (no terminal reply), duplicates delivered, late replies the
 * origin dropped, recovery time (from the fault until the paced load's
 * throughput, counted per 100 ms, is back to 90 % of the pre-fault level;
 * see recovery.ts), detection times, and the crash re-run histogram scraped
 * from the faulted node's /metrics.
 *
 * Pass criteria (RELIABILITY.md I1–I3 plus recovery): 0 lost, 0 duplicates
 * delivered, 0 foreign replies, 0 errors (in every scenario here a healthy
 * worker is left elsewhere, so not even `unavailable`), recovery ≤ 3 s after
 * the fault and after the heal.
 *
 * Every node process is stopped by its pid when the scenario ends, whether it
 * passed, failed or threw (ClusterProvider.release / close).
 */
import { randomBytes } from 'node:crypto';
import { unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ChaosCluster, type ClusterSpec } from './ChaosCluster.js';
import { counterValue, histogramDelta, histogramOf, histogramQuantileBound, parseMetrics, type Histogram, type Sample } from './metricsText.js';
import { bucketize, quantile, ratePerSec, recoveryMs } from './recovery.js';
import { StreamLoad, type LoadModel, type LoadReport } from './StreamLoad.js';

// ---------------------------------------------------------------- timings

export type Mode = 'full' | 'short';

export interface Timing {
  /** Load before the baseline window (connections warm, batch sizes settled). */
  warmupMs: number;
  /** The pre-fault window the baseline throughput is taken over. */
  baselineMs: number;
  /** Load after the last event (fault or heal); recovery must show inside it. */
  afterMs: number;
  /** How long a SIGSTOP or a partition lasts before the heal. */
  outageMs: number;
  /** How long the link is slow. */
  slowLinkMs: number;
  /** Load after the start of the measured window where there is no fault event (a fault present from the start). */
  steadyMs: number;
  /** How long to wait for the last replies once sending stops; past it, the unanswered are lost. */
  drainMs: number;
  /** SIGKILL repeats, for the detection-time p50 and max. */
  killRepeats: number;
}

export const TIMINGS: Record<Mode, Timing> = {
  full: { warmupMs: 1_000, baselineMs: 2_000, afterMs: 4_000, outageMs: 5_000, slowLinkMs: 5_000, steadyMs: 4_000, drainMs: 20_000, killRepeats: 5 },
  short: { warmupMs: 300, baselineMs: 1_200, afterMs: 3_500, outageMs: 5_000, slowLinkMs: 3_000, steadyMs: 2_000, drainMs: 20_000, killRepeats: 1 },
};

/** Recovery must be at most this long, after the fault and after the heal. */
export const RECOVERY_LIMIT_MS = 3_000;
/** Watchdog for hung runs in the worker scenarios. */
export const RUN_TIMEOUT_MS = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const now = () => performance.now();

export interface LoadSpec {
  model: LoadModel;
  window: number;
  /** Requests per second (see StreamLoad: paced below capacity, so dips are the fault's); absent: a closed loop. */
  rate?: number;
  /** Send in bursts this many ms apart, so requests arrive together and batch. */
  burstMs?: number;
  /** Pressure only: its replies are checked like any other, but recovery is not judged on its throughput. */
  pressure?: boolean;
}

/**
 * Steady streaming load, paced well below what a busy 2-core machine serves
 * (so a dip in throughput is the fault's, not the machine's): iris at
 * 800/s with a window of 64; text-orientation at 60/s with a window of 12,
 * sent 6 at a time every 100 ms so requests arrive together and batch (a
 * crash then hits a batch of one to a few; the report shows the sizes).
 */
const IRIS: LoadSpec = { model: 'iris', window: 64, rate: 800 };
const TEXT: LoadSpec = { model: 'text-orientation', window: 12, rate: 60, burstMs: 100 };
/**
 * Beside the paced load in the node scenarios: a closed loop that keeps 32
 * iris requests in flight at all times, so a node that dies or stops has
 * work on it when it does (the paced load alone has one or two in flight).
 */
const IRIS_PRESSURE: LoadSpec = { model: 'iris', window: 32, pressure: true };

// ---------------------------------------------------------------- clusters

export type ClusterKind = 'standard' | 'corrupt-model';

const IDS = ['a', 'b', 'c'];
const BOTH = ['iris', 'text-orientation'];

interface ClusterRecipe {
  spec: ClusterSpec;
  /** The models each node must offer when the cluster is healthy. */
  models: Record<string, string[]>;
  dispose?: () => Promise<void>;
}

async function recipe(kind: ClusterKind): Promise<ClusterRecipe> {
  switch (kind) {
    case 'standard':
      // c sits behind a fault proxy (for the slow link); the watchdog is short so a hang is over in a second.
      return {
        spec: { ids: IDS, models: BOTH.join(','), extra: ['--run-timeout-ms', String(RUN_TIMEOUT_MS)], proxied: ['c'] },
        models: Object.fromEntries(IDS.map((id) => [id, BOTH])),
      };
    case 'corrupt-model': {
      // Random bytes where the ONNX file should be: node a cannot load text-orientation and must not offer it.
      const file = join(tmpdir(), `actorserve-chaos-corrupt-${randomBytes(6).toString('hex')}.onnx`);
      await writeFile(file, randomBytes(64 * 1024));
      return {
        spec: { ids: IDS, models: BOTH.join(','), perNode: { a: ['--model-path', `text-orientation=${file}`] } },
        models: { a: ['iris'], b: BOTH, c: BOTH },
        dispose: () => unlink(file).catch(() => undefined),
      };
    }
  }
}

/** Where scenarios get their cluster: a fresh one each time, or one shared per kind and restored between scenarios. */
export interface ClusterProvider {
  /** A cluster of this kind with every node up, linked and offering `models` (where its kind has them). */
  acquire(kind: ClusterKind, models: readonly string[]): Promise<ChaosCluster>;
  /** Done with it; `broken`: a scenario threw, do not reuse it. */
  release(kind: ClusterKind, cluster: ChaosCluster, broken: boolean): Promise<void>;
  /** Stops every cluster still held. */
  close(): Promise<void>;
}

interface Held {
  cluster: ChaosCluster;
  recipe: ClusterRecipe;
}

/**
 * Load for a while and throw the numbers away: fresh processes run
 * unoptimised code for their first seconds, and a baseline taken then would
 * be the JIT's, not the cluster's.
 */
export async function prewarm(cluster: ChaosCluster, ms: number): Promise<void> {
  const loads = await Promise.all(cluster.liveIds().flatMap((id) => [IRIS, TEXT].map((l, i) =>
    StreamLoad.open({ url: cluster.url(id), model: l.model, window: l.window, prefix: `warm-${id}-${i}-${Math.round(now())}` }))));
  try {
    for (const l of loads) l.start();
    await sleep(ms);
    for (const l of loads) l.stopSending();
    await Promise.all(loads.map((l) => l.drain(10_000, 0)));
  } finally {
    for (const l of loads) l.close();
  }
  // Let the garbage of the warm-up be collected before anything is measured.
  await sleep(500);
}

/** How long a freshly started cluster, or a respawned node, is warmed up. */
export const PREWARM_MS = 3_000;

async function startKind(kind: ClusterKind): Promise<Held> {
  const r = await recipe(kind);
  let cluster: ChaosCluster | undefined;
  try {
    cluster = await ChaosCluster.start(r.spec, 45_000);
    await cluster.waitConverged(15_000, r.models);
    await prewarm(cluster, PREWARM_MS);
    return { cluster, recipe: r };
  } catch (e) {
    await cluster?.stop();
    await r.dispose?.();
    throw e;
  }
}

async function stopHeld(h: Held): Promise<void> {
  await h.cluster.stop();
  await h.recipe.dispose?.();
}

/**
 * Puts a shared cluster back to health for the next scenario: every fault
 * healed, dead nodes respawned, a node that withdrew a model the scenario
 * needs (after a crash loop) restarted, views converged with those models
 * offered, and a respawned node warmed up.
 */
async function restore(h: Held, needed: readonly string[]): Promise<void> {
  const { cluster } = h;
  await cluster.healAll();
  let respawned = false;
  for (const id of cluster.ids) {
    const node = cluster.node(id);
    let offers: string[] | undefined;
    if (node.process.alive) offers = (await cluster.view(id).catch(() => []))?.find((m) => m.nodeId === id)?.models;
    const want = (h.recipe.models[id] ?? []).filter((m) => needed.includes(m));
    const missing = !node.process.alive || !want.every((m) => offers?.includes(m));
    if (!missing) continue;
    if (node.process.alive) await node.process.kill();
    await cluster.respawn(id);
    respawned = true;
  }
  await cluster.waitConverged(20_000, Object.fromEntries(Object.entries(h.recipe.models).map(([id, ms]) => [id, ms.filter((m) => needed.includes(m))])));
  if (respawned) await prewarm(cluster, PREWARM_MS);
}

/** A fresh cluster per scenario, stopped right after it. */
export function freshClusters(): ClusterProvider {
  const held = new Map<ChaosCluster, Held>();
  return {
    async acquire(kind) {
      const h = await startKind(kind);
      held.set(h.cluster, h);
      return h.cluster;
    },
    async release(_kind, cluster) {
      const h = held.get(cluster);
      held.delete(cluster);
      if (h) await stopHeld(h);
    },
    async close() {
      await Promise.all([...held.values()].map(stopHeld));
      held.clear();
    },
  };
}

/** One cluster per kind, restored between scenarios (faster; what the CI tests use). */
export function sharedClusters(): ClusterProvider {
  const held = new Map<ClusterKind, Held>();
  return {
    async acquire(kind, models) {
      const h = held.get(kind);
      if (h) {
        try {
          await restore(h, models);
          return h.cluster;
        } catch {
          held.delete(kind);
          await stopHeld(h);
        }
      }
      const fresh = await startKind(kind);
      held.set(kind, fresh);
      return fresh.cluster;
    },
    async release(kind, cluster, broken) {
      const h = held.get(kind);
      if (!h || h.cluster !== cluster) return void (await cluster.stop());
      if (broken) {
        held.delete(kind);
        await stopHeld(h);
      }
    },
    async close() {
      await Promise.all([...held.values()].map(stopHeld));
      held.clear();
    },
  };
}

// ---------------------------------------------------------------- scenarios

export interface FaultTimes {
  /** When the fault was injected; absent when the fault is there from the start (no recovery to measure). */
  faultAt?: number;
  /** When it was healed, if it was. */
  healAt?: number;
  /** A fault injected over a while (a crash loop): when the last injection was done. */
  faultEndAt?: number;
}

export interface FaultContext {
  cluster: ChaosCluster;
  def: ScenarioDef;
  timing: Timing;
  /** Free-form lines for the report. */
  notes: string[];
  /** Call at the moment of the fault (starts the detection watch); returns the time. */
  fault(): number;
  /** Call at the moment of the heal; returns the time. */
  heal(): number;
  /** A fault injected over a while: call when the last injection is done. */
  faultEnded(): void;
}

export interface ScenarioDef {
  name: string;
  description: string;
  cluster: ClusterKind;
  /** The node the clients connect to. */
  client: string;
  /** The node the fault is injected on. */
  target: string;
  loads: LoadSpec[];
  /** The load whose throughput recovery is judged on (the model the fault hits). Default: every load. */
  recoveryModel?: LoadModel;
  /** Poll the others' GET /v1/cluster every 20 ms from the fault: when do they suspect and mark the target down? */
  watchTarget?: boolean;
  /** Only in the full run (not in --short or the CI tests). */
  fullOnly?: boolean;
  /** Phases with a fault each (the cluster is restored in between). Default 1. */
  repeats?: (t: Timing) => number;
  /** Injects the fault (calling ctx.fault() and ctx.heal() at those moments); returns once the last event has happened. */
  inject(ctx: FaultContext): Promise<void>;
}

/** Until `check` is true or `timeoutMs` passes; resolves with whether it became true. */
async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 20): Promise<boolean> {
  const end = now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (now() > end) return false;
    await sleep(stepMs);
  }
}

const CRASHED = /^worker crashed/;
const GAVE_UP = /stopped by its supervisor|gave up|giving up|withdrawn|escalating/;

async function modelReady(cluster: ChaosCluster, id: string, model: string): Promise<boolean> {
  const res = await fetch(`http://127.0.0.1:${cluster.node(id).port}/v2/models/${model}/ready`, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined);
  return res?.status === 200;
}

/**
 * A worker that crashes again and again until its supervisor gives up: each
 * crash is injected (its next run throws) once the restarted worker is
 * ready again, `spacingMs` later. The requests of the previous crashed batch
 * re-run (alone) the moment the worker is ready, before an injection over
 * HTTP can land, so every injected crash hits a fresh batch; a worker that
 * threw on its very first run after each restart would hit those re-runs
 * instead (a second crash makes a request `internal`: poison), which the
 * chaos API cannot arm. The model then gives up on this node, hands its
 * queue to the other nodes and is withdrawn.
 */
export function crashLoop(spacingMs: number): ScenarioDef['inject'] {
  return async (ctx) => {
    const { cluster, def } = ctx;
    const model = 'text-orientation';
    const proc = cluster.node(def.target).process;
    const faultAt = ctx.fault();
    const crashes = () => proc.eventsSince(faultAt, CRASHED).filter((e) => String(e.line['actor'] ?? '').startsWith(`${model}/`)).length;
    const gaveUp = () => proc.eventsSince(faultAt, GAVE_UP).length > 0;
    let injected = 0;
    const giveUpBy = faultAt + 15_000;
    while (!gaveUp() && now() < giveUpBy && injected < 12) {
      // Counted before the call: the crash can be logged before the call returns.
      const before = crashes();
      // While the worker restarts, the node answers 404 (no running worker): try again shortly.
      const r = await cluster.chaos(def.target, { fault: 'crashWorker', model });
      if (r.status !== 200) {
        await sleep(10);
        continue;
      }
      injected++;
      if (!(await until(() => crashes() > before || gaveUp(), 5_000))) {
        ctx.notes.push(`crash ${injected} was injected but the worker did not crash within 5 s`);
        break;
      }
      if (gaveUp()) break;
      await until(() => modelReady(cluster, def.target, model), 5_000);
      await sleep(spacingMs);
    }
    ctx.notes.push(`${injected} crashes injected over ${Math.round(now() - faultAt)} ms; ${gaveUp() ? 'the supervisor gave up and the model was withdrawn' : 'the supervisor did NOT give up'}`);
    ctx.faultEnded();
  };
}

/**
 * In this order, a shared cluster (--short, the tests) needs the fewest
 * restarts: the crash loop (which leaves a without text-orientation) comes
 * after the other text-orientation scenarios, the kill after the rest.
 */
export const SCENARIOS: ScenarioDef[] = [
  {
    name: 'worker-hang',
    description: `text-orientation worker on a hangs mid-batch until the watchdog (--run-timeout-ms ${RUN_TIMEOUT_MS}) kills its thread; load on a`,
    cluster: 'standard',
    client: 'a',
    target: 'a',
    loads: [IRIS, TEXT],
    recoveryModel: 'text-orientation',
    async inject(ctx) {
      ctx.fault();
      await ctx.cluster.inject(ctx.def.target, { fault: 'hangWorker', model: 'text-orientation' });
    },
  },
  {
    name: 'node-sigstop',
    description: 'SIGSTOP node c for 5 s, then SIGCONT; load on a',
    cluster: 'standard',
    client: 'a',
    target: 'c',
    loads: [IRIS, IRIS_PRESSURE],
    watchTarget: true,
    async inject(ctx) {
      const proc = ctx.cluster.node(ctx.def.target).process;
      ctx.fault();
      proc.signal('SIGSTOP');
      await sleep(ctx.timing.outageMs);
      ctx.heal();
      proc.signal('SIGCONT');
    },
  },
  {
    name: 'partition',
    description: 'node c cut off from a and b (cutLink on both sides of both links) for 5 s, then healed; load on a',
    cluster: 'standard',
    client: 'a',
    target: 'c',
    loads: [IRIS, IRIS_PRESSURE],
    watchTarget: true,
    async inject(ctx) {
      const { cluster, def } = ctx;
      const others = cluster.ids.filter((id) => id !== def.target);
      const faultAt = ctx.fault();
      await Promise.all([
        ...others.map((p) => cluster.inject(def.target, { fault: 'cutLink', peer: p })),
        ...others.map((p) => cluster.inject(p, { fault: 'cutLink', peer: def.target })),
      ]);
      await sleep(faultAt + ctx.timing.outageMs - now());
      ctx.heal();
      await Promise.all(cluster.ids.map((id) => cluster.inject(id, { fault: 'heal' })));
    },
  },
  {
    name: 'slow-link',
    description: 'every link to and from node c slowed by 50 ms each way (fault proxy in front of c, delayPeerMessages 50 on c) for 5 s (3 s in --short); load on a',
    cluster: 'standard',
    client: 'a',
    target: 'c',
    loads: [IRIS, IRIS_PRESSURE],
    watchTarget: true,
    async inject(ctx) {
      const { cluster, def } = ctx;
      const proxy = cluster.node(def.target).proxy;
      if (!proxy) throw new Error(`node ${def.target} has no fault proxy in front of it`);
      const faultAt = ctx.fault();
      proxy.setMode({ kind: 'delay', ms: 50 });
      await cluster.inject(def.target, { fault: 'delayPeerMessages', ms: 50 });
      await sleep(faultAt + ctx.timing.slowLinkMs - now());
      ctx.heal();
      proxy.setMode('pass');
      await cluster.inject(def.target, { fault: 'heal' });
    },
  },
  {
    name: 'worker-crash-loop',
    description: 'text-orientation worker on a crashes again on each restart until its supervisor gives up (intensity 5 restarts in 10 s) and the model is withdrawn there; load on a; recovery counted from the last crash',
    cluster: 'standard',
    client: 'a',
    target: 'a',
    loads: [IRIS, TEXT],
    recoveryModel: 'text-orientation',
    inject: crashLoop(250),
  },
  {
    name: 'node-sigkill',
    description: 'SIGKILL node c of three; load on a (restarted between repeats)',
    cluster: 'standard',
    client: 'a',
    target: 'c',
    loads: [IRIS, IRIS_PRESSURE],
    watchTarget: true,
    repeats: (t) => t.killRepeats,
    async inject(ctx) {
      ctx.fault();
      ctx.cluster.node(ctx.def.target).process.signal('SIGKILL');
    },
  },
  {
    name: 'control',
    description: 'no fault at all (a fault and a heal are only marked, 5 s apart): the noise floor of the recovery measure on this machine; load on a',
    cluster: 'standard',
    client: 'a',
    target: 'c',
    loads: [IRIS, IRIS_PRESSURE],
    fullOnly: true,
    // Watched like the node scenarios, so it carries the same measurement overhead.
    watchTarget: true,
    async inject(ctx) {
      ctx.fault();
      await sleep(ctx.timing.outageMs);
      ctx.heal();
    },
  },
  {
    name: 'corrupt-model',
    description: 'node a started with a corrupt text-orientation file (random bytes); clients on a; b and c serve it',
    cluster: 'corrupt-model',
    client: 'a',
    target: 'a',
    loads: [IRIS, TEXT],
    async inject(ctx) {
      const view = await ctx.cluster.view(ctx.def.client);
      const self = view.find((m) => m.nodeId === ctx.def.target);
      ctx.notes.push(`a offers [${self?.models.join(', ') ?? '?'}]`);
    },
  },
];

export const scenarioNames = SCENARIOS.map((s) => s.name);

export function scenarioByName(name: string): ScenarioDef {
  const s = SCENARIOS.find((x) => x.name === name);
  if (!s) throw new RangeError(`no scenario ${JSON.stringify(name)} (have: ${scenarioNames.join(', ')})`);
  return s;
}

// ---------------------------------------------------------------- results

export interface Detection {
  /** From the fault until every other node saw the target not up or not linked. */
  suspectMs: number | null;
  /** Until every other node marked it down. */
  downMs: number | null;
  /** After the heal, until every other node saw it up and linked again (convergence). */
  backUpMs?: number | null;
  /** The last result computed by the target arrived this long after the fault (results stop coming from it). */
  lastResultFromTargetMs: number | null;
  /** Until every request in flight at the fault had its reply (everything stuck on the target routed around). */
  inFlightSettledMs: number | null;
}

export interface CrashRerun {
  /** Requests re-run after a worker crash (on the target, during the scenario). */
  count: number;
  meanMs: number | null;
  p50BoundMs: number | null;
  maxBoundMs: number | null;
  /** Per-bucket counts (not cumulative), by upper bound in ms. */
  buckets: { leMs: number; count: number }[];
}

export interface StreamResult extends LoadReport {
  baselinePerSec: number | null;
  recoveryMs: number | null | undefined;
  healRecoveryMs: number | null | undefined;
  /** Results per 100 ms from the start of the load (the JSON keeps it; the table does not). */
  series: number[];
  /** The same, by the node that computed them. */
  seriesByNode: Record<string, number[]>;
  /** Whether the scenario's recovery is judged on this load. */
  judged: boolean;
  /** A closed-loop pressure load (see IRIS_PRESSURE). */
  pressure: boolean;
}

export interface PhaseResult {
  streams: StreamResult[];
  faultAtMs: number | undefined;
  faultEndAtMs: number | undefined;
  healAtMs: number | undefined;
  loadMs: number;
  /** How busy this process (load, proxy, polling) was during the load: near 1, the numbers measure the runner, not the cluster. */
  runnerEventLoopUtilization: number;
  detection: Detection | undefined;
  inFlightSettledMs: number | null;
}

/** Counts summed over the scenario's loads, with the same meaning as in {@link LoadReport}. */
export interface ScenarioResult extends Pick<LoadReport, 'sent' | 'results' | 'errors' | 'lost' | 'duplicates' | 'foreign' | 'byNode'> {
  name: string;
  description: string;
  mode: Mode;
  ok: boolean;
  failures: string[];
  durationMs: number;
  /** Late replies the client's node dropped (first reply won): actorserve_duplicate_replies_total delta. */
  lateRepliesDropped: number | null;
  /** Worst over streams and repeats; undefined where there is no fault event; null when never recovered. */
  recoveryMs: number | null | undefined;
  healRecoveryMs: number | null | undefined;
  baselinePerSec: Record<string, number | null>;
  /** Until every request in flight at the fault was answered (worst over repeats). */
  inFlightSettledMs: number | null | undefined;
  detection?: { samples: Detection[]; p50: Partial<Record<keyof Detection, number>>; max: Partial<Record<keyof Detection, number>> };
  crashRerun?: CrashRerun;
  workerRestarts: number | null;
  /** Counts of notable log messages per node during the scenario. */
  events: Record<string, Record<string, number>>;
  notes: string[];
  /** The nodes' warn and error log lines during the scenario (the first 80), with their time from its start. */
  logs: string[];
  phases: PhaseResult[];
}

/** The pass criteria; returns why it failed (empty: passed). */
export function failuresOf(r: Pick<ScenarioResult, 'lost' | 'duplicates' | 'foreign' | 'errors' | 'recoveryMs' | 'healRecoveryMs'>): string[] {
  const out: string[] = [];
  if (r.lost > 0) out.push(`${r.lost} requests lost (no terminal reply)`);
  if (r.duplicates > 0) out.push(`${r.duplicates} requests got more than one reply`);
  if (r.foreign > 0) out.push(`${r.foreign} replies for ids the client never sent`);
  const errors = Object.entries(r.errors).filter(([, n]) => n > 0);
  if (errors.length > 0) out.push(`errors: ${errors.map(([c, n]) => `${c} ×${n}`).join(', ')}`);
  const check = (what: string, v: number | null | undefined) => {
    if (v === null) out.push(`throughput not back to 90 % of the pre-fault level after the ${what} by the end of the run`);
    else if (v !== undefined && v > RECOVERY_LIMIT_MS) out.push(`recovery after the ${what} took ${Math.round(v)} ms (limit ${RECOVERY_LIMIT_MS} ms)`);
  };
  check('fault', r.recoveryMs);
  check('heal', r.healRecoveryMs);
  return out;
}

// ---------------------------------------------------------------- runner

export interface RunOptions {
  mode: Mode;
  clusters: ClusterProvider;
  /** Progress lines. */
  log?: (line: string) => void;
}

/** Worst of several recovery values: null (never) beats any number; undefined (n/a) loses to everything. */
function worst(values: (number | null | undefined)[]): number | null | undefined {
  if (values.some((v) => v === null)) return null;
  const nums = values.filter((v): v is number => typeof v === 'number');
  return nums.length > 0 ? Math.max(...nums) : undefined;
}

async function scrape(cluster: ChaosCluster, id: string): Promise<Sample[] | undefined> {
  if (!cluster.node(id).process.alive) return undefined;
  const samples = parseMetrics(await cluster.metrics(id).catch(() => ''));
  return samples.length > 0 ? samples : undefined;
}

/** Polls the other nodes' views of the target every 20 ms from the fault until `stop()`. */
function watchTarget(cluster: ChaosCluster, target: string, faultAt: number, heal: () => number | undefined, stop: () => boolean) {
  const observers = cluster.ids.filter((id) => id !== target);
  const suspectAt = new Map<string, number>();
  const downAt = new Map<string, number>();
  const upAt = new Map<string, number>();
  const done = (async () => {
    while (!stop()) {
      const t = now();
      await Promise.all(observers.map(async (id) => {
        const view = await cluster.view(id, 1_000).catch(() => undefined);
        if (!view) return;
        // When the answer came: the node showed this by then.
        const at = now();
        const m = view.find((e) => e.nodeId === target);
        const up = m !== undefined && m.status === 'up' && m.linked;
        if (!up && !suspectAt.has(id)) suspectAt.set(id, at);
        if (m?.status === 'down' && !downAt.has(id)) downAt.set(id, at);
        const healAt = heal();
        if (healAt !== undefined && t >= healAt && up && !upAt.has(id)) upAt.set(id, at);
      }));
      await sleep(20 - (now() - t));
    }
  })();
  const allBy = (m: Map<string, number>, from: number | undefined) =>
    from === undefined ? undefined : observers.every((id) => m.has(id)) ? Math.max(...observers.map((id) => m.get(id)!)) - from : null;
  return {
    done,
    result: () => ({ suspectMs: allBy(suspectAt, faultAt) ?? null, downMs: allBy(downAt, faultAt) ?? null, backUpMs: allBy(upAt, heal()) }),
  };
}

async function runPhase(cluster: ChaosCluster, def: ScenarioDef, timing: Timing, prefix: string, notes: string[]): Promise<PhaseResult> {
  const loads: StreamLoad[] = [];
  // Ends the detection watch too, also when the injection throws.
  let loadEnded = false;
  try {
    for (const [i, l] of def.loads.entries()) {
      loads.push(await StreamLoad.open({
        url: cluster.url(def.client), model: l.model, window: l.window, ...(l.rate ? { rate: l.rate } : {}), ...(l.burstMs ? { burstMs: l.burstMs } : {}), prefix: `${prefix}-${i}-${l.model}`,
      }));
    }
    const t0 = now();
    const elu0 = performance.eventLoopUtilization();
    for (const l of loads) l.start();
    await sleep(timing.warmupMs + timing.baselineMs);
    let inFlight: string[][] = [];
    const times: FaultTimes = {};
    let watcher: ReturnType<typeof watchTarget> | undefined;
    await def.inject({
      cluster,
      def,
      timing,
      notes,
      fault: () => {
        inFlight = loads.map((l) => l.unansweredIds());
        times.faultAt = now();
        if (def.watchTarget) watcher = watchTarget(cluster, def.target, times.faultAt, () => times.healAt, () => loadEnded);
        return times.faultAt;
      },
      heal: () => (times.healAt = now()),
      faultEnded: () => void (times.faultEndAt = now()),
    });
    const lastEvent = times.healAt ?? times.faultEndAt ?? times.faultAt;
    await sleep(lastEvent === undefined ? timing.steadyMs : lastEvent + timing.afterMs - now());
    const loadEnd = now();
    const elu = performance.eventLoopUtilization(elu0).utilization;
    loadEnded = true;
    for (const l of loads) l.stopSending();
    await watcher?.done;
    await Promise.all(loads.map((l) => l.drain(timing.drainMs)));

    const faultAt = times.faultAt;
    const streams: StreamResult[] = loads.map((l, i) => {
      const series = bucketize(l.resultTimes, t0, loadEnd);
      const baselineFrom = (faultAt ?? loadEnd) - timing.baselineMs;
      const rec = (eventAt: number | undefined, end: number) =>
        faultAt === undefined || eventAt === undefined ? undefined : recoveryMs(series, { baselineFrom, faultAt, eventAt, segmentEnd: end });
      return {
        ...l.report(),
        baselinePerSec: ratePerSec(series, baselineFrom, faultAt ?? loadEnd),
        // A fault injected over a while (a crash loop) is over at its last injection: recovery counts from there.
        recoveryMs: rec(times.faultEndAt ?? faultAt, times.healAt ?? loadEnd),
        healRecoveryMs: times.healAt === undefined ? undefined : rec(times.healAt, loadEnd),
        series: series.counts,
        seriesByNode: Object.fromEntries([...l.resultTimesByNode].map(([n, t]) => [n, bucketize(t, t0, loadEnd).counts])),
        judged: !def.loads[i]!.pressure && (def.recoveryModel === undefined || def.recoveryModel === l.o.model),
        pressure: def.loads[i]!.pressure ?? false,
      };
    });
    // Everything in flight at the fault answered: when the last of it was.
    let inFlightSettledMs: number | null = 0;
    if (faultAt !== undefined) {
      for (const [i, ids] of inFlight.entries()) {
        for (const id of ids) {
          const at = loads[i]!.answeredAt(id);
          if (at === undefined) inFlightSettledMs = null;
          else if (inFlightSettledMs !== null) inFlightSettledMs = Math.max(inFlightSettledMs, at - faultAt);
        }
      }
    }
    let detection: Detection | undefined;
    if (watcher && faultAt !== undefined) {
      const fromTarget = loads.flatMap((l) => l.resultTimesByNode.get(def.target) ?? []).filter((t) => t <= (times.healAt ?? loadEnd));
      const w = watcher.result();
      detection = {
        suspectMs: w.suspectMs,
        downMs: w.downMs,
        ...(times.healAt !== undefined ? { backUpMs: w.backUpMs ?? null } : {}),
        lastResultFromTargetMs: fromTarget.length > 0 ? Math.max(...fromTarget) - faultAt : null,
        inFlightSettledMs,
      };
    }
    return {
      streams,
      faultAtMs: faultAt === undefined ? undefined : faultAt - t0,
      faultEndAtMs: times.faultEndAt === undefined ? undefined : times.faultEndAt - t0,
      healAtMs: times.healAt === undefined ? undefined : times.healAt - t0,
      loadMs: loadEnd - t0,
      runnerEventLoopUtilization: Math.round(elu * 100) / 100,
      detection,
      inFlightSettledMs,
    };
  } finally {
    loadEnded = true;
    for (const l of loads) l.close();
  }
}

const ms = (s: number) => Math.round(s * 1000 * 10) / 10;

function crashRerunOf(after: Sample[] | undefined, before: Sample[] | undefined): CrashRerun | undefined {
  if (!after) return undefined;
  const name = 'actorserve_crash_rerun_seconds';
  const h: Histogram = before ? histogramDelta(histogramOf(after, name), histogramOf(before, name)) : histogramOf(after, name);
  if (h.count <= 0) return undefined;
  let prev = 0;
  const buckets = h.buckets.map((b) => {
    const c = b.count - prev;
    prev = b.count;
    return { leMs: b.le === Infinity ? Infinity : ms(b.le), count: c };
  }).filter((b) => b.count > 0);
  const bound = (q: number) => {
    const v = histogramQuantileBound(h, q);
    return v === undefined ? null : v === Infinity ? Infinity : ms(v);
  };
  return { count: h.count, meanMs: ms(h.sum / h.count), p50BoundMs: bound(0.5), maxBoundMs: bound(1), buckets };
}

/**
 * Runs one scenario (all its repeats) and returns its report; never throws:
 * a scenario that cannot run is reported failed with the reason. The cluster
 * is released (stopped, or restored for the next scenario) in every case.
 */
export async function runScenario(def: ScenarioDef, o: RunOptions): Promise<ScenarioResult> {
  const timing = TIMINGS[o.mode];
  const started = now();
  const notes: string[] = [];
  const phases: PhaseResult[] = [];
  const failures: string[] = [];
  const events: Record<string, Record<string, number>> = {};
  const logs: string[] = [];
  let lateRepliesDropped: number | null = null;
  let crashRerun: CrashRerun | undefined;
  let workerRestarts: number | null = null;
  let cluster: ChaosCluster | undefined;
  let broken = false;
  let since = now();
  let exitsBefore = new Set<string>();
  try {
    o.log?.(`${def.name}: starting the cluster`);
    cluster = await o.clusters.acquire(def.cluster, def.loads.map((l) => l.model));
    const repeats = def.repeats?.(timing) ?? 1;
    since = now();
    exitsBefore = new Set(cluster.unexpectedExits());
    const clientBefore = await scrape(cluster, def.client);
    const targetBefore = await scrape(cluster, def.target);
    let dupDropped = 0;
    for (let i = 0; i < repeats; i++) {
      if (i > 0) {
        // The previous repeat killed the target: bring it back as a new incarnation first.
        await cluster.healAll();
        if (!cluster.node(def.target).process.alive) await cluster.respawn(def.target);
        await cluster.waitConverged(20_000);
        await prewarm(cluster, PREWARM_MS);
      }
      o.log?.(`${def.name}: load and fault${repeats > 1 ? ` (${i + 1}/${repeats})` : ''}`);
      phases.push(await runPhase(cluster, def, timing, `${def.name}-${i}`, notes));
    }
    const clientAfter = await scrape(cluster, def.client);
    const targetAfter = await scrape(cluster, def.target);
    if (clientAfter) dupDropped += counterValue(clientAfter, 'actorserve_duplicate_replies_total') - (clientBefore ? counterValue(clientBefore, 'actorserve_duplicate_replies_total') : 0);
    lateRepliesDropped = clientAfter ? dupDropped : null;
    crashRerun = crashRerunOf(targetAfter, targetBefore);
    if (targetAfter) workerRestarts = counterValue(targetAfter, 'actorserve_worker_restarts_total') - (targetBefore ? counterValue(targetBefore, 'actorserve_worker_restarts_total') : 0);
  } catch (e) {
    broken = true;
    failures.push(`scenario could not run: ${(e as Error).message}`);
  } finally {
    if (cluster) {
      // Logged by every incarnation of every node during the scenario, also when it could not finish.
      for (const { id, process } of cluster.history) {
        for (const e of process.eventsSince(since)) {
          const msg = e.line.msg ?? '?';
          if (msg !== 'listening' && !msg.startsWith('chaos:')) (events[id] ??= {})[msg] = (events[id]?.[msg] ?? 0) + 1;
          if ((e.line.level ?? 0) >= 40) logs.push(`${id} +${Math.round(e.at - since)}ms ${JSON.stringify(e.line)}`);
        }
      }
      logs.sort((x, y) => Number(/\+(\d+)ms/.exec(x)?.[1]) - Number(/\+(\d+)ms/.exec(y)?.[1]));
      // A node that died without being killed is a runtime crash, whatever the load saw.
      for (const exit of cluster.unexpectedExits()) if (!exitsBefore.has(exit)) failures.push(exit);
      await o.clusters.release(def.cluster, cluster, broken).catch(() => undefined);
    }
  }

  const sum = (pick: (s: StreamResult) => number) => phases.reduce((n, p) => n + p.streams.reduce((m, s) => m + pick(s), 0), 0);
  const errors: Record<string, number> = {};
  const byNode: Record<string, number> = {};
  const baselinePerSec: Record<string, number | null> = {};
  for (const p of phases) {
    for (const s of p.streams) {
      for (const [c, n] of Object.entries(s.errors)) errors[c] = (errors[c] ?? 0) + n;
      for (const [c, n] of Object.entries(s.byNode)) byNode[c] = (byNode[c] ?? 0) + n;
      if (s.closedEarly) failures.push(`the ${s.model} client connection closed before the load was done`);
      baselinePerSec[`${s.model}${s.pressure ? ' (closed loop)' : ''}`] = Math.round(s.baselinePerSec ?? 0);
    }
  }
  const detections = phases.map((p) => p.detection).filter((d): d is Detection => d !== undefined);
  const result: ScenarioResult = {
    name: def.name,
    description: def.description,
    mode: o.mode,
    ok: false,
    failures,
    durationMs: Math.round(now() - started),
    sent: sum((s) => s.sent),
    results: sum((s) => s.results),
    errors,
    lost: sum((s) => s.lost),
    duplicates: sum((s) => s.duplicates),
    foreign: sum((s) => s.foreign),
    byNode,
    lateRepliesDropped,
    recoveryMs: phases.length > 0 ? worst(phases.flatMap((p) => p.streams.filter((s) => s.judged).map((s) => s.recoveryMs))) : undefined,
    healRecoveryMs: phases.length > 0 ? worst(phases.flatMap((p) => p.streams.filter((s) => s.judged).map((s) => s.healRecoveryMs))) : undefined,
    baselinePerSec,
    inFlightSettledMs: phases.length > 0 ? worst(phases.map((p) => p.inFlightSettledMs)) : undefined,
    ...(detections.length > 0 ? { detection: summarize(detections) } : {}),
    ...(crashRerun ? { crashRerun } : {}),
    workerRestarts,
    events,
    notes,
    logs: logs.slice(0, 80),
    phases,
  };
  if (phases.length === 0 && failures.length === 0) failures.push('no load phase ran');
  failures.push(...failuresOf(result));
  result.ok = failures.length === 0;
  return result;
}

function summarize(samples: Detection[]): NonNullable<ScenarioResult['detection']> {
  const keys = ['suspectMs', 'downMs', 'backUpMs', 'lastResultFromTargetMs', 'inFlightSettledMs'] as const;
  const p50: Partial<Record<keyof Detection, number>> = {};
  const max: Partial<Record<keyof Detection, number>> = {};
  for (const k of keys) {
    const vals = samples.map((s) => s[k]).filter((v): v is number => typeof v === 'number');
    if (vals.length === 0) continue;
    p50[k] = Math.round(quantile(vals, 0.5)!);
    max[k] = Math.round(Math.max(...vals));
  }
  return { samples, p50, max };
}

/** Runs scenarios in order with one provider; closes it (every process stopped) at the end, whatever happened. */
export async function runScenarios(defs: readonly ScenarioDef[], o: RunOptions & { onResult?: (r: ScenarioResult) => void }): Promise<ScenarioResult[]> {
  const out: ScenarioResult[] = [];
  try {
    for (const def of defs) {
      const r = await runScenario(def, o);
      o.onResult?.(r);
      out.push(r);
    }
  } finally {
    await o.clusters.close();
  }
  return out;
}
