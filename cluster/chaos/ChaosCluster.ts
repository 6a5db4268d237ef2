/**
 * A real multi-process cluster on loopback for the chaos suite: every node
 * runs with `--chaos` and a fresh admin token and cluster secret (passed
 * through the environment, never argv), optionally behind a FaultProxy that
 * its peers dial instead of its port (`--advertise` names the proxy), so the
 * links into that node can be slowed or cut.
 *
 *   const cluster = await ChaosCluster.start({ ids: ['a', 'b', 'c'], models: 'iris', proxied: ['c'] });
 *   await cluster.chaos('c', { fault: 'delayPeerMessages', ms: 50 });
 *   cluster.node('c').process?.signal('SIGSTOP');
 *   await cluster.stop();                       // SIGKILL by pid, proxies closed
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { FaultProxy } from '../../src/chaos/FaultProxy.js';
import type { ChaosRequest } from '../../src/chaos/Chaos.js';
import { NodeProcess, freePorts } from './NodeProcess.js';

export interface ClusterSpec {
  /** Node ids, in start order. */
  ids: string[];
  /** --models for every node. */
  models: string;
  /** Extra flags for every node. */
  extra?: string[];
  /** Extra flags per node id. */
  perNode?: Record<string, string[]>;
  /** Node ids whose peers reach them through a FaultProxy. */
  proxied?: string[];
}

export interface ClusterNode {
  id: string;
  /** The node's own port (clients connect here, never through the proxy). */
  port: number;
  /** The address peers use: the proxy's port when proxied. */
  peerPort: number;
  proxy: FaultProxy | undefined;
  /** The current process (replaced by respawn). */
  process: NodeProcess;
  args: string[];
}

export interface ViewEntry {
  nodeId: string;
  incarnation: number;
  status: string;
  linked: boolean;
  models: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ChaosCluster {
  private readonly nodes = new Map<string, ClusterNode>();
  /** Every process this cluster started (respawns included), with its node id. */
  readonly history: { id: string; process: NodeProcess }[] = [];
  private readonly env: NodeJS.ProcessEnv;
  private stopped = false;

  private constructor(readonly spec: ClusterSpec) {
    this.env = {
      ACTORSERVE_CLUSTER_SECRET: randomBytes(18).toString('hex'),
      ACTORSERVE_ADMIN_TOKEN: randomBytes(18).toString('hex'),
    };
  }

  /**
   * Starts every node (and its proxy) and waits until each sees all the
   * others up and linked. On any failure, stops what it started and throws.
   */
  static async start(spec: ClusterSpec, convergeTimeoutMs = 30_000): Promise<ChaosCluster> {
    const cluster = new ChaosCluster(spec);
    try {
      const proxied = new Set(spec.proxied ?? []);
      const ports = await freePorts(spec.ids.length);
      const proxies = new Map<string, FaultProxy>();
      for (const [i, id] of spec.ids.entries()) {
        if (!proxied.has(id)) continue;
        const proxy = new FaultProxy({ targetHost: '127.0.0.1', targetPort: ports[i]! });
        await proxy.start();
        proxies.set(id, proxy);
      }
      const peerPort = (i: number) => proxies.get(spec.ids[i]!)?.port ?? ports[i]!;
      const seeds = spec.ids.map((_, i) => `127.0.0.1:${peerPort(i)}`).join(',');
      const started = await Promise.allSettled(spec.ids.map(async (id, i) => {
        const args = [
          '--node-id', id, '--port', String(ports[i]), '--models', spec.models, '--seeds', seeds,
          '--advertise', `127.0.0.1:${peerPort(i)}`, '--chaos', '--log-level', 'info',
          ...(spec.extra ?? []), ...(spec.perNode?.[id] ?? []),
        ];
        const process = await NodeProcess.start({ args, env: cluster.env });
        cluster.history.push({ id, process });
        cluster.nodes.set(id, { id, port: ports[i]!, peerPort: peerPort(i), proxy: proxies.get(id), process, args });
      }));
      for (const p of proxies.values()) if (![...cluster.nodes.values()].some((n) => n.proxy === p)) await p.close();
      const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      await cluster.waitConverged(convergeTimeoutMs);
      return cluster;
    } catch (e) {
      await cluster.stop();
      throw e;
    }
  }

  get ids(): string[] {
    return [...this.nodes.keys()];
  }

  node(id: string): ClusterNode {
    const n = this.nodes.get(id);
    if (!n) throw new RangeError(`no node ${id} in this cluster`);
    return n;
  }

  url(id: string): string {
    return `ws://127.0.0.1:${this.node(id).port}/v1/stream`;
  }

  /** POST /v1/admin/chaos on a node; resolves with the HTTP status and body. */
  async chaos(id: string, body: ChaosRequest): Promise<{ status: number; body: unknown }> {
    const res = await fetch(`http://127.0.0.1:${this.node(id).port}/v1/admin/chaos`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.env['ACTORSERVE_ADMIN_TOKEN']}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(5_000),
    });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  }

  /** Like chaos(), but throws unless the node answers 200. */
  async inject(id: string, body: ChaosRequest): Promise<void> {
    const r = await this.chaos(id, body);
    if (r.status !== 200) throw new Error(`chaos ${JSON.stringify(body)} on ${id}: ${r.status} ${JSON.stringify(r.body)}`);
  }

  /** GET /v1/cluster on a node. */
  async view(id: string, timeoutMs = 2_000): Promise<ViewEntry[]> {
    const res = await fetch(`http://127.0.0.1:${this.node(id).port}/v1/cluster`, { signal: AbortSignal.timeout(timeoutMs) });
    return ((await res.json()) as { members: ViewEntry[] }).members;
  }

  /** GET /metrics on a node (Prometheus text). */
  async metrics(id: string): Promise<string> {
    const res = await fetch(`http://127.0.0.1:${this.node(id).port}/metrics`, { signal: AbortSignal.timeout(5_000) });
    return res.text();
  }

  /** Processes of this cluster that ended without being killed by us (crashes), described. */
  unexpectedExits(): string[] {
    return this.history.flatMap(({ id, process }) => (process.unexpectedExit ? [`node ${id} (pid ${process.pid}) ${process.unexpectedExit}`] : []));
  }

  /** Node ids whose process is running. */
  liveIds(): string[] {
    return this.ids.filter((id) => this.node(id).process.alive);
  }

  /**
   * Every live node sees every live node up and linked (and, when `models`
   * is given, offering those models). Resolves with how long it took.
   * @throws Error past the timeout, with the views it last saw.
   */
  async waitConverged(timeoutMs = 15_000, models?: Record<string, string[]>): Promise<number> {
    const start = performance.now();
    let last: unknown;
    for (;;) {
      const ids = this.liveIds();
      try {
        const views = await Promise.all(ids.map((id) => this.view(id)));
        last = views;
        const ok = views.every((v) => ids.every((id) => {
          const m = v.find((e) => e.nodeId === id);
          return m !== undefined && m.status === 'up' && m.linked && (models?.[id] ?? []).every((x) => m.models.includes(x));
        }));
        if (ok) return performance.now() - start;
      } catch (e) {
        last = (e as Error).message;
      }
      if (performance.now() - start > timeoutMs) throw new Error(`cluster did not converge within ${timeoutMs} ms: ${JSON.stringify(last)}`);
      await sleep(50);
    }
  }

  /** Starts a node again (same id, port and flags) after it was killed; a new incarnation. */
  async respawn(id: string): Promise<void> {
    const n = this.node(id);
    if (n.process.alive) throw new Error(`node ${id} is still running (pid ${n.process.pid})`);
    n.proxy?.setMode('pass');
    n.process = await NodeProcess.start({ args: n.args, env: this.env });
    this.history.push({ id, process: n.process });
  }

  /**
   * Undoes every fault a scenario may have left: SIGCONT, proxies back to
   * pass, `heal` on every live node. Never throws.
   */
  async healAll(): Promise<void> {
    for (const n of this.nodes.values()) {
      n.process.signal('SIGCONT');
      n.proxy?.setMode('pass');
    }
    await Promise.all(this.liveIds().map((id) => this.chaos(id, { fault: 'heal' }).catch(() => undefined)));
  }

  /** SIGKILLs every node process by its pid (stopped ones too) and closes the proxies. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all([...this.nodes.values()].map(async (n) => {
      await n.process.kill();
      await n.proxy?.close();
    }));
  }
}
