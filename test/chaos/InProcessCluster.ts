/**
 * An actorserve cluster inside the test process, for model-based fault
 * tests: real nodes on loopback sockets, raw clients on the nodes that are
 * never killed, and a timestamped record of every fault done to it and every
 * frame its clients received, for a checker to judge after the run (the way
 * Jepsen's checkers read a history).
 *
 * Faults are the node's chaos interface: a worker's next run throws or
 * hangs past the watchdog, or its thread exits; a node stops abruptly (its
 * sockets close, peers see the links drop); a partition cuts every link
 * between one node and the rest, both ways; a heal lifts every cut.
 */
import { performance } from 'node:perf_hooks';
import { ActorserveNode } from '../../src/actors/Node.js';
import type { Logger } from '../../src/log.js';
import type { ModelRunner } from '../../src/models/InferenceThread.js';
import { resolveModels } from '../../src/models/registry.js';
import { decodeUntrusted } from '../../src/transport/codec.js';
import type { ErrorFrame, ResultFrame, ServerFrame } from '../../src/transport/protocol.js';
import { RawClient, irisInput } from '../helpers/RawClient.js';

export type WorkerFault = 'throwNext' | 'hangNext' | 'exit';

export interface Reply {
  /** Milliseconds since the cluster started. */
  at: number;
  frame: ResultFrame | ErrorFrame;
}

export interface RequestRecord {
  id: string;
  client: string;
  /** The node the client is connected to. */
  origin: string;
  at: number;
  deadlineAt: number;
  /** Consistent-hash routing key, when the request had one. */
  key: string | undefined;
  /** The iris class its input row belongs to: a result must rank it first. */
  label: number;
  replies: Reply[];
}

export interface FaultRecord {
  node: string;
  kind: WorkerFault;
  at: number;
  /** The worker had a thread to inject into (a restarting worker has none: nothing happened). */
  armed: boolean;
  /** When the injected thread was gone (the fault fired, or the thread died of something else). */
  resolvedAt: number | undefined;
  thread: ModelRunner | undefined;
}

export interface NodeRecord {
  id: string;
  node: ActorserveNode;
  upAt: number;
  downAt: number | undefined;
  /** When its iris worker's supervisor gave up (restart intensity exceeded): the node serves iris no more. */
  gaveUpAt: number | undefined;
  /** Joined after the cluster formed (an "add node"). */
  late: boolean;
}

export interface CutRecord {
  node: string;
  /** The nodes it was cut from (a node added later is not cut off from it). */
  peers: string[];
  from: number;
  to: number | undefined;
  /** Links actually cut (cutLink calls that found a link), of those asked for. */
  cut: number;
  asked: number;
}

export interface ClientRecord {
  name: string;
  origin: string;
  raw: RawClient;
  sent: Set<string>;
  seq: number;
  closedAt: number | undefined;
}

export interface ClusterOptions {
  /** Nodes at the start; clients go on the first `clientHosts`. */
  nodes: number;
  clients: readonly { origin: number }[];
  deadlineMs: number;
  runTimeoutMs: number;
  heartbeatMs: number;
  log: Logger;
}

export const SECRET = 'model-based-fault-test';

/** Well-separated rows of each iris class: a correct result ranks the row's own class first. */
const ROWS: readonly (readonly number[])[] = [
  [5.1, 3.5, 1.4, 0.2],
  [6.0, 2.7, 4.2, 1.3],
  [7.7, 3.0, 6.1, 2.3],
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class InProcessCluster {
  readonly t0 = performance.now();
  readonly nodes = new Map<string, NodeRecord>();
  readonly clients: ClientRecord[] = [];
  readonly requests = new Map<string, RequestRecord>();
  readonly faults: FaultRecord[] = [];
  readonly cuts: CutRecord[] = [];
  /** Frames a client received for an id it never sent (cross-talk), or with no id at all. */
  readonly foreign: { client: string; at: number; frame: unknown }[] = [];
  readonly history: string[] = [];
  private nextNode = 0;
  private readonly poller: NodeJS.Timeout;

  private constructor(private readonly o: ClusterOptions) {
    // Notices when each injected fault has fired: the worker's thread changes (or the node is gone).
    this.poller = setInterval(() => this.pollFaults(), 5);
  }

  now(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  note(line: string): void {
    this.history.push(`+${Math.round(this.now())}ms ${line}`);
  }

  /** Starts the nodes, waits until they all see each other up, connects the clients. */
  static async start(o: ClusterOptions): Promise<InProcessCluster> {
    const c = new InProcessCluster(o);
    try {
      const first = await c.startNode([], false);
      await Promise.all(Array.from({ length: o.nodes - 1 }, () => c.startNode([first.node.addr], false)));
      await c.waitConverged(10_000);
      for (const [i, spec] of o.clients.entries()) {
        const host = c.nodes.get(`n${spec.origin}`)!;
        const raw = await RawClient.connect(host.node.url);
        const client: ClientRecord = { name: `c${i}`, origin: host.id, raw, sent: new Set(), seq: 0, closedAt: undefined };
        c.listen(client);
        c.clients.push(client);
      }
      c.note(`cluster up: ${[...c.nodes.keys()].join(' ')}; clients ${c.clients.map((x) => `${x.name}@${x.origin}`).join(' ')}`);
      return c;
    } catch (e) {
      await c.stop();
      throw e;
    }
  }

  live(): NodeRecord[] {
    return [...this.nodes.values()].filter((n) => n.downAt === undefined);
  }

  /**
   * Background traffic: every client sends one request every `everyMs`, so
   * faults meet requests in flight, half of them keyed so that they cross
   * nodes. Returns a function that stops it.
   */
  trickle(everyMs: number): () => void {
    let sent = 0;
    const from = this.now();
    let tick = 0;
    const timer = setInterval(() => {
      // Every other request has a routing key: unkeyed work mostly stays on its origin (power of two
      // choices prefers the local node unless it is the busiest), keyed work goes to the key's owner.
      const key = tick % 2 === 1 ? `t${tick % 7}` : undefined;
      tick++;
      for (let i = 0; i < this.clients.length; i++) this.submit(i, 1, key, false);
      sent += this.clients.length;
    }, everyMs);
    return () => {
      clearInterval(timer);
      this.note(`trickle: ${sent} requests from +${Math.round(from)}ms, one per client every ${everyMs} ms, every other one keyed`);
    };
  }

  /** Sends `count` iris requests from one client, with the cluster's deadline. */
  submit(clientIx: number, count: number, key?: string, noted = true): string[] {
    const client = this.clients[clientIx]!;
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const id = `${client.name}-${client.seq++}`;
      const label = (client.seq + clientIx) % ROWS.length;
      const at = this.now();
      this.requests.set(id, { id, client: client.name, origin: client.origin, at, deadlineAt: at + this.o.deadlineMs, key, label, replies: [] });
      client.sent.add(id);
      client.raw.send({ t: 'infer', id, model: 'iris', inputs: irisInput(ROWS[label]!), deadlineMs: this.o.deadlineMs, ...(key !== undefined ? { key } : {}) });
      ids.push(id);
    }
    if (noted) this.note(`submit ${client.name}@${client.origin} ${ids[0]}..${ids.at(-1)}${key !== undefined ? ` key=${key}` : ''}`);
    return ids;
  }

  workerFault(nodeId: string, kind: WorkerFault): boolean {
    const rec = this.nodes.get(nodeId)!;
    const thread = this.irisThread(rec);
    const armed = rec.node.chaos.workerFault('iris', 0, kind);
    const at = this.now();
    this.faults.push({ node: nodeId, kind, at, armed, resolvedAt: armed ? undefined : at, thread });
    this.note(`${kind} ${nodeId}/iris/worker-0${armed ? '' : ' (no running thread: nothing injected)'}`);
    return armed;
  }

  /**
   * Crashes a node's iris worker (its thread exits) again each time it has
   * restarted, until its supervisor gives up (past the restart intensity):
   * the node withdraws iris and hands its queue to other nodes.
   */
  async crashUntilGivenUp(nodeId: string): Promise<void> {
    const rec = this.nodes.get(nodeId)!;
    this.note(`crash ${nodeId}/iris/worker-0 until its supervisor gives up`);
    const until = performance.now() + 5_000;
    while (performance.now() < until) {
      const stats = await rec.node.batcherStats('iris');
      if (stats.workers['worker-0'] === 'stopped') {
        rec.gaveUpAt = this.now();
        this.note(`${nodeId}/iris gave up: withdrawn`);
        return;
      }
      if (this.irisThread(rec) !== undefined && (stats.workers['worker-0'] === 'idle' || stats.workers['worker-0'] === 'busy')) this.workerFault(nodeId, 'exit');
      await sleep(5);
    }
    throw new Error(`${nodeId}/iris/worker-0 did not give up within 5 s of repeated crashes`);
  }

  /** Stops a node abruptly: no drain, its sockets close, its threads are terminated. */
  async kill(nodeId: string): Promise<void> {
    const rec = this.nodes.get(nodeId)!;
    this.note(`kill ${nodeId}`);
    rec.downAt = this.now();
    await rec.node.stop();
    for (const f of this.faults) if (f.node === nodeId && f.resolvedAt === undefined) f.resolvedAt = rec.downAt;
  }

  /**
   * A graceful leave (what SIGTERM does): the node stops taking work, hands
   * what is queued to other nodes, finishes what runs, then stops. The model
   * counts it as gone from the moment it starts leaving.
   */
  async leave(nodeId: string): Promise<void> {
    const rec = this.nodes.get(nodeId)!;
    this.note(`leave ${nodeId}`);
    rec.downAt = this.now();
    await rec.node.leave(3_000);
    for (const f of this.faults) if (f.node === nodeId && f.resolvedAt === undefined) f.resolvedAt = this.now();
    this.note(`${nodeId} left`);
  }

  /** Starts a new node seeded with every live one; resolves when it is up. */
  async add(): Promise<string> {
    const seeds = this.live().map((n) => n.node.addr);
    const rec = await this.startNode(seeds, true);
    this.note(`add ${rec.id} (seeds ${seeds.length})`);
    return rec.id;
  }

  /**
   * Cuts every link between `nodeId` and every other live node, on both
   * sides. Waits (up to 2 s) for the node's links to exist first: a cut
   * only blocks links that exist, and a link dialled later would leak.
   */
  async partition(nodeId: string): Promise<void> {
    const target = this.nodes.get(nodeId)!;
    const others = this.live().filter((n) => n.id !== nodeId);
    const linked = () => others.every((o) => this.sees(target, o.id) && this.sees(o, nodeId));
    const until = performance.now() + 2_000;
    while (!linked() && performance.now() < until) await sleep(20);
    let cut = 0;
    for (const o of others) {
      if (target.node.chaos.cutLink(o.id)) cut++;
      if (o.node.chaos.cutLink(nodeId)) cut++;
    }
    const rec: CutRecord = { node: nodeId, peers: others.map((o) => o.id), from: this.now(), to: undefined, cut, asked: 2 * others.length };
    this.cuts.push(rec);
    this.note(`partition ${nodeId} from ${others.map((o) => o.id).join(',')} (${cut}/${rec.asked} links cut)`);
  }

  /**
   * Cuts the one link between two nodes, both ways, leaving each linked to
   * everyone else: reachability stops being transitive (a and b both see c).
   */
  async cutBetween(a: string, b: string): Promise<void> {
    const ra = this.nodes.get(a)!;
    const rb = this.nodes.get(b)!;
    const until = performance.now() + 2_000;
    while (!(this.sees(ra, b) && this.sees(rb, a)) && performance.now() < until) await sleep(20);
    const cut = Number(ra.node.chaos.cutLink(b)) + Number(rb.node.chaos.cutLink(a));
    this.cuts.push({ node: a, peers: [b], from: this.now(), to: undefined, cut, asked: 2 });
    this.note(`cut ${a}-${b} (${cut}/2 links cut)`);
  }

  healAll(): void {
    for (const n of this.live()) n.node.chaos.heal();
    const at = this.now();
    const healed = this.cuts.filter((c) => c.to === undefined);
    for (const c of healed) c.to = at;
    this.note(`heal${healed.length ? ` ${healed.map((c) => c.node).join(',')}` : ' (nothing cut)'}`);
  }

  /** Every live node sees every other live node up and linked. */
  converged(): boolean {
    const live = this.live();
    return live.every((a) => live.every((b) => a === b || this.sees(a, b.id)));
  }

  async waitConverged(timeoutMs: number): Promise<boolean> {
    const until = performance.now() + timeoutMs;
    while (!this.converged()) {
      if (performance.now() > until) return false;
      await sleep(20);
    }
    return true;
  }

  /** Every request has a reply, or the time for one is past. */
  async waitAnswered(graceMs: number): Promise<void> {
    const last = Math.max(0, ...[...this.requests.values()].map((r) => r.deadlineAt));
    while ([...this.requests.values()].some((r) => r.replies.length === 0) && this.now() < last + graceMs) await sleep(20);
  }

  async stop(): Promise<void> {
    clearInterval(this.poller);
    for (const c of this.clients) c.raw.close();
    await Promise.all(this.live().map(async (n) => {
      n.downAt = this.now();
      await n.node.stop();
    }));
  }

  /** The view of `by` shows `peer` up and linked. */
  private sees(by: NodeRecord, peer: string): boolean {
    const m = by.node.clusterView().find((v) => v.nodeId === peer);
    return m !== undefined && m.status === 'up' && m.linked;
  }

  private irisThread(rec: NodeRecord): ModelRunner | undefined {
    return rec.node.models.get('iris')?.workers[0]?.thread();
  }

  private pollFaults(): void {
    for (const f of this.faults) {
      if (f.resolvedAt !== undefined) continue;
      const rec = this.nodes.get(f.node)!;
      if (rec.downAt !== undefined || this.irisThread(rec) !== f.thread) f.resolvedAt = this.now();
    }
    // A worker that lost its thread with no fault injected: the watchdog took a slow run for a hang, or a real crash.
    for (const rec of this.live()) {
      const thread = this.irisThread(rec);
      const last = this.threads.get(rec.id);
      this.threads.set(rec.id, thread);
      if (last === undefined || thread === last) continue;
      if (!this.faults.some((f) => f.node === rec.id && f.armed && f.thread === last)) {
        this.unexplained.push({ node: rec.id, at: this.now() });
        this.note(`${rec.id}/iris/worker-0 lost its thread with no fault injected`);
      }
    }
  }

  /** The last thread seen per node, to notice restarts nobody injected. */
  private readonly threads = new Map<string, ModelRunner | undefined>();
  /** Worker restarts the test did not cause. */
  readonly unexplained: { node: string; at: number }[] = [];

  private async startNode(seeds: readonly string[], late: boolean): Promise<NodeRecord> {
    const id = `n${this.nextNode++}`;
    const node = await ActorserveNode.start({
      nodeId: id,
      port: 0,
      models: resolveModels(['iris'], { workers: 1 }),
      clusterSecret: SECRET,
      seeds,
      chaos: true,
      runTimeoutMs: this.o.runTimeoutMs,
      heartbeatMs: this.o.heartbeatMs,
      log: this.o.log,
    });
    const rec: NodeRecord = { id, node, upAt: this.now(), downAt: undefined, gaveUpAt: undefined, late };
    this.nodes.set(id, rec);
    return rec;
  }

  private listen(client: ClientRecord): void {
    client.raw.ws.on('message', (data: Buffer) => {
      const at = this.now();
      let f: ServerFrame;
      try {
        f = decodeUntrusted(data) as ServerFrame;
      } catch {
        this.foreign.push({ client: client.name, at, frame: `undecodable frame of ${data.byteLength} bytes` });
        return;
      }
      if (f.t === 'welcome') return;
      const id = f.id;
      const req = typeof id === 'string' && client.sent.has(id) ? this.requests.get(id) : undefined;
      if (!req) {
        this.foreign.push({ client: client.name, at, frame: f.t === 'error' ? { id: f.id, code: f.code, message: f.message } : { id: f.id, node: f.node } });
        return;
      }
      req.replies.push({ at, frame: f });
    });
    client.raw.ws.on('close', (code) => {
      client.closedAt = this.now();
      this.note(`client ${client.name} connection closed (${code})`);
    });
  }
}
