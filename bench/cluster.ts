/**
 * The cluster phase: CPU per request of an N-node local cluster against one
 * node alone at the same open-loop rate, and against N separate nodes (no
 * cluster) sharing that rate, which parts the cost of running N processes
 * at 1/N of the load each on these cores from the cost of clustering; then
 * a join and an abrupt death under closed-loop load:
 *
 *  - join: a new node is spawned (seeded with the others) while traffic
 *    flows; measured from the spawn to the first result whose `node` field
 *    names it;
 *  - death: the last original node is SIGKILLed; measured from the kill to
 *    the moment a survivor's `GET /v1/cluster` shows it `down` (or gone).
 *
 * Clients never connect to the node that is killed nor to the new one, so the
 * run measures the cluster's routing, not a client's reconnect.
 */
import { randomBytes } from 'node:crypto';
import type { ModelInput } from './payload.js';
import { runPhase } from './loadPhase.js';
import { epochMs, freePorts, sleep, within } from './processes.js';
import type { BenchError, ClusterResults, PhaseResult, TimelineEvent } from './results.js';
import { spawnActorserveNode, startActorserveNode, type RunningServer } from './servers.js';

export const CPU_RATIO_TARGET = 1.5;
const VIEW_TIMEOUT_MS = 20_000;
const FIRST_RESULT_TIMEOUT_MS = 30_000;
const DOWN_TIMEOUT_MS = 15_000;
const DOWN_POLL_MS = 10;
/**
 * Warm-up of each cluster phase, at least (seconds). The first second of open loop against three
 * cluster nodes, clients on every node, can stall and then catch up: with --quick's 0.3 s warm-up
 * its 1 s window completed 1,664–2,394 results a second of 15,000–27,000 offered in 4 of 12 runs,
 * and none at all in one more (a failed test); with 1 s, the stall fell mostly in the warm-up
 * (1 of 6 runs; that window still completed 43% of what was offered).
 */
const MIN_WARMUP_S = 1;

export interface ClusterOptions {
  nodes: number;
  input: ModelInput;
  /** One node's closed-loop throughput for this model, when already measured; measured here otherwise. */
  soloCapacity: number | null;
  ratePct: number;
  concurrency: number;
  connections: number;
  generators: number;
  warmupS: number;
  durationS: number;
  drainTimeoutMs: number;
  log: (line: string) => void;
  errors: BenchError[];
}

interface MemberView {
  nodeId: string;
  status: string;
}

async function viewOf(base: string): Promise<MemberView[] | undefined> {
  try {
    const res = await fetch(`${base}/v1/cluster`, { signal: AbortSignal.timeout(1_000) });
    if (res.status !== 200) return undefined;
    return ((await res.json()) as { members: MemberView[] }).members;
  } catch {
    return undefined;
  }
}

async function waitForView(nodes: readonly RunningServer[], upCount: number): Promise<void> {
  const until = Date.now() + VIEW_TIMEOUT_MS;
  while (Date.now() < until) {
    const views = await Promise.all(nodes.map((n) => viewOf(n.base)));
    if (views.every((v) => v !== undefined && v.filter((m) => m.status === 'up').length >= upCount)) return;
    await sleep(50);
  }
  throw new Error(`the cluster did not reach ${upCount} up members on every node within ${VIEW_TIMEOUT_MS} ms`);
}

const note = (o: ClusterOptions, phase: string, e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  o.errors.push({ phase, message });
  o.log(`  ${phase} failed: ${message.split('\n')[0]}`);
};

export async function runCluster(o: ClusterOptions): Promise<ClusterResults> {
  const n = o.nodes;
  const ports = await freePorts(2 * n + 2);
  const metricsOf = (ns: readonly RunningServer[]) => ns.map((s) => `${s.base}/metrics`);
  const wsOf = (ns: readonly RunningServer[]) => ns.map((s) => `ws://127.0.0.1:${s.port}/v1/stream`);
  const result: ClusterResults = {
    nodes: n,
    model: o.input.model,
    rate: 0,
    ratePctOfSoloCapacity: o.ratePct,
    soloCapacity: o.soloCapacity ?? 0,
    solo: null,
    spread: null,
    entry: null,
    separate: null,
    cpuPerRequestRatio: { spread: null, entry: null, separate: null },
    vsSeparate: { spread: null, entry: null },
    target: CPU_RATIO_TARGET,
    meetsTarget: null,
    join: null,
    kill: null,
    churn: null,
  };
  const warmupS = Math.max(MIN_WARMUP_S, o.warmupS);
  const common = { input: o.input, generators: o.generators, warmupS, drainTimeoutMs: o.drainTimeoutMs };
  /**
   * Fresh processes pay for JIT and first inference runs; both sides of the
   * CPU comparison get the same unrecorded closed-loop run first, so the
   * comparison is of steady states.
   */
  const warmUp = (label: string, ns: readonly RunningServer[], connections: number) =>
    runPhase({
      ...common, label: `${label} (warm-up, not recorded)`, system: 'cluster', target: { kind: 'ws', urls: wsOf(ns) },
      mode: { kind: 'closed', concurrency: o.concurrency }, connections, warmupS: 0, durationS: Math.max(1, 2 * warmupS),
      serverPids: [], metricsUrls: [],
    });

  // One node alone.
  o.log(`cluster: one node alone (${o.input.model}) ...`);
  const solo = await startActorserveNode({ id: 'solo', port: ports[0]!, models: [o.input.model] });
  try {
    await warmUp('cluster: one node alone', [solo], o.connections);
    if (o.soloCapacity === null) {
      const cap = await runPhase({
        ...common, label: 'cluster: solo capacity', system: 'actorserve', target: { kind: 'ws', urls: wsOf([solo]) },
        mode: { kind: 'closed', concurrency: o.concurrency }, connections: o.connections, durationS: o.durationS,
        serverPids: [solo.proc.pid], metricsUrls: [],
      });
      result.soloCapacity = cap.throughput;
    }
    result.rate = Math.max(1, Math.round((result.soloCapacity * o.ratePct) / 100));
    result.solo = await runPhase({
      ...common, label: 'cluster: one node alone', system: 'actorserve', target: { kind: 'ws', urls: wsOf([solo]) },
      mode: { kind: 'open', rate: result.rate }, connections: o.connections, durationS: o.durationS, offeredPctOfCapacity: o.ratePct,
      serverPids: [solo.proc.pid], metricsUrls: metricsOf([solo]),
    });
  } catch (e) {
    note(o, 'cluster: one node alone', e);
  } finally {
    o.log('cluster: stopping the lone node ...');
    await solo.proc.stop();
  }
  if (result.solo === null) return result;
  // Every node gets the same number of client connections.
  const spreadConns = Math.ceil(Math.max(o.connections, n) / n) * n;

  // The same number of nodes, each alone: the share of the CPU that is N processes at 1/N of the load, not clustering.
  o.log(`cluster: ${n} separate nodes (no cluster), ${result.rate} req/s spread over them ...`);
  const separate: RunningServer[] = [];
  try {
    const spawned = ports.slice(n + 2, 2 * n + 2).map((port, i) => spawnActorserveNode({ id: `s${i + 1}`, port, models: [o.input.model] }));
    separate.push(...spawned.map((s) => s.server));
    await Promise.all(spawned.map((s) => s.ready));
    await warmUp(`cluster: ${n} separate nodes`, separate, spreadConns);
    result.separate = await runPhase({
      ...common, label: `cluster: ${n} separate nodes`, system: 'actorserve', target: { kind: 'ws', urls: wsOf(separate) },
      mode: { kind: 'open', rate: result.rate }, connections: spreadConns, durationS: o.durationS, offeredPctOfCapacity: o.ratePct,
      serverPids: separate.map((s) => s.proc.pid), metricsUrls: metricsOf(separate),
    });
  } catch (e) {
    note(o, 'cluster: separate nodes', e);
  } finally {
    await Promise.all(separate.map((s) => s.proc.stop()));
  }

  // N nodes, every one seeded with all of them, sharing a fresh secret through the environment.
  const secret = randomBytes(24).toString('hex');
  const clusterName = `bench-${process.pid}`;
  const seeds = ports.slice(1, n + 1);
  o.log(`cluster: starting ${n} nodes ...`);
  const members: RunningServer[] = [];
  let joiner: RunningServer | undefined;
  try {
    const spawned = seeds.map((port, i) =>
      spawnActorserveNode({ id: `n${i + 1}`, port, models: [o.input.model], seeds, secret, cluster: clusterName }),
    );
    members.push(...spawned.map((s) => s.server));
    await Promise.all(spawned.map((s) => s.ready));
    await waitForView(members, n);
    const pids = members.map((m) => m.proc.pid);
    await warmUp(`cluster: ${n} nodes`, members, spreadConns);
    try {
      o.log(`cluster: ${n} nodes, clients on every node, ${result.rate} req/s ...`);
      result.spread = await runPhase({
        ...common, label: `cluster: ${n} nodes, clients on every node`, system: 'cluster', target: { kind: 'ws', urls: wsOf(members) },
        mode: { kind: 'open', rate: result.rate }, connections: spreadConns, durationS: o.durationS, offeredPctOfCapacity: o.ratePct,
        serverPids: pids, metricsUrls: metricsOf(members),
      });
    } catch (e) {
      note(o, 'cluster: clients on every node', e);
    }
    try {
      o.log(`cluster: ${n} nodes, every client on ${members[0]!.id}, ${result.rate} req/s ...`);
      result.entry = await runPhase({
        ...common, label: `cluster: ${n} nodes, clients on ${members[0]!.id}`, system: 'cluster', target: { kind: 'ws', urls: wsOf(members.slice(0, 1)) },
        mode: { kind: 'open', rate: result.rate }, connections: o.connections, durationS: o.durationS, offeredPctOfCapacity: o.ratePct,
        serverPids: pids, metricsUrls: metricsOf(members),
      });
    } catch (e) {
      note(o, 'cluster: clients on one node', e);
    }
    const per = (p: PhaseResult | null) => p?.server.cpuPerRequestUs ?? null;
    const over = (p: PhaseResult | null, base: PhaseResult | null) => {
      const [x, b] = [per(p), per(base)];
      return x !== null && b !== null && b > 0 ? Math.round((x / b) * 1000) / 1000 : null;
    };
    result.cpuPerRequestRatio = { spread: over(result.spread, result.solo), entry: over(result.entry, result.solo), separate: over(result.separate, result.solo) };
    result.vsSeparate = { spread: over(result.spread, result.separate), entry: over(result.entry, result.separate) };
    const ratios = [result.cpuPerRequestRatio.spread, result.cpuPerRequestRatio.entry].filter((x): x is number => x !== null);
    result.meetsTarget = ratios.length === 0 ? null : ratios.every((x) => x <= CPU_RATIO_TARGET);

    // Join and abrupt death under closed-loop load.
    const victim = members[n - 1]!;
    const entries = n > 1 ? members.slice(0, n - 1) : members;
    const joinId = `n${n + 1}`;
    const events: TimelineEvent[] = [];
    let startAt = 0;
    let measureFrom = 0;
    let started!: () => void;
    const startedP = new Promise<void>((res) => (started = res));
    const firstSeen = new Map<string, number>();
    const waiters = new Map<string, () => void>();
    let stopChurn!: () => void;
    const stopWhen = new Promise<void>((res) => (stopChurn = res));
    const at = (epoch: number) => Math.round((epoch - startAt) / 10) / 100;
    o.log(`cluster: join of ${joinId} and SIGKILL of ${victim.id} under load ...`);
    const churnMax = warmupS + 2 * o.durationS + (FIRST_RESULT_TIMEOUT_MS + DOWN_TIMEOUT_MS) / 1000 + 30;
    const phase = runPhase({
      ...common, label: 'cluster: join and kill', system: 'cluster', target: { kind: 'ws', urls: wsOf(entries) },
      mode: { kind: 'closed', concurrency: o.concurrency }, connections: Math.max(o.connections, entries.length), durationS: churnMax,
      serverPids: [], metricsUrls: metricsOf(entries), stopWhen,
      onStart: (s, m) => {
        startAt = s;
        measureFrom = m;
        started();
      },
      onNode: (node, t) => {
        if (!firstSeen.has(node)) firstSeen.set(node, t);
        waiters.get(node)?.();
      },
    });
    const phaseSettled = phase.then(() => undefined, () => undefined);
    const script = (async () => {
      await Promise.race([startedP, phaseSettled]);
      if (startAt === 0) return; // the load never started; the phase's own error says why
      await sleep(Math.max(0, measureFrom - epochMs()) + Math.max(1, o.durationS / 2) * 1000);
      const spawnAt = epochMs();
      events.push({ atS: at(spawnAt), label: `${joinId} spawned` });
      const j = spawnActorserveNode({ id: joinId, port: ports[n + 1]!, models: [o.input.model], seeds, secret, cluster: clusterName });
      joiner = j.server;
      result.join = { node: joinId, spawnToReadyMs: null, spawnToFirstResultMs: null };
      const seen = new Promise<void>((res) => {
        if (firstSeen.has(joinId)) res();
        waiters.set(joinId, res);
      });
      await j.ready.then(
        () => {
          const t = epochMs();
          result.join!.spawnToReadyMs = Math.round(t - spawnAt);
          events.push({ atS: at(t), label: `${joinId} ready` });
        },
        (e: unknown) => note(o, `cluster: ${joinId} start`, e),
      );
      await within(seen, FIRST_RESULT_TIMEOUT_MS);
      const first = firstSeen.get(joinId);
      if (first !== undefined) {
        result.join.spawnToFirstResultMs = Math.round(first - spawnAt);
        events.push({ atS: at(first), label: `${joinId} first result` });
      } else {
        o.errors.push({ phase: 'cluster: join', message: `no result from ${joinId} within ${FIRST_RESULT_TIMEOUT_MS} ms of its spawn` });
      }
      await sleep(Math.max(1, o.durationS / 2) * 1000);

      const survivor = members[0]!;
      const killAt = epochMs();
      await victim.proc.kill();
      events.push({ atS: at(killAt), label: `SIGKILL ${victim.id}` });
      result.kill = { node: victim.id, survivor: survivor.id, killToDownMs: null };
      const until = killAt + DOWN_TIMEOUT_MS;
      while (epochMs() < until) {
        const v = await viewOf(survivor.base);
        const s = v?.find((m) => m.nodeId === victim.id)?.status;
        if (v !== undefined && (s === undefined || s === 'down')) {
          const t = epochMs();
          result.kill.killToDownMs = Math.round(t - killAt);
          events.push({ atS: at(t), label: `${victim.id} down` });
          break;
        }
        await sleep(DOWN_POLL_MS);
      }
      if (result.kill.killToDownMs === null) {
        o.errors.push({ phase: 'cluster: kill', message: `${victim.id} not marked down on ${survivor.id} within ${DOWN_TIMEOUT_MS} ms` });
      }
      await sleep(Math.max(1, o.durationS / 2) * 1000);
    })();
    try {
      await script;
    } catch (e) {
      note(o, 'cluster: join and kill', e);
    } finally {
      stopChurn();
    }
    try {
      result.churn = { ...(await phase), events };
    } catch (e) {
      note(o, 'cluster: join and kill load', e);
    }
  } catch (e) {
    note(o, 'cluster', e);
  } finally {
    o.log('cluster: stopping the nodes ...');
    await Promise.all([...members, ...(joiner ? [joiner] : [])].map((m) => m.proc.stop()));
  }
  return result;
}
