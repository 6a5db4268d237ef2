/**
 * `actorserve` command line. Options are validated at once; a bad one prints
 * the reason and the usage and exits 2.
 */
import { parseArgs } from 'node:util';
import { promises as dns } from 'node:dns';
import { networkInterfaces } from 'node:os';
import { existsSync } from 'node:fs';
import { TokenSet, tokensInFile } from './transport/Auth.js';
import { readTlsFiles } from './transport/Tls.js';
import type { SupervisionSettings } from './actors/Supervision.js';
import { ActorserveNode } from './actors/Node.js';
import { createLogger } from './log.js';
import { builtinModelNames, irisModelPath, resolveModels, type ModelOverrides } from './models/registry.js';
import { buildIrisModel } from './models/builders/iris.js';
import { applyHeapGrowth, DEFAULT_HEAP_GROWTH_PERCENT, OLD_SPACE_FLOOR_FLAG, oldSpaceFloorMib } from './heapGrowth.js';
import { applyParallelScavenge } from './scavenge.js';
import { usableCores } from './cores.js';

export const USAGE = `actorserve — distributed ML inference on supervised actors

Usage:
  actorserve node [options]     start a node serving models over ws://HOST:PORT/v1/stream
  actorserve leave [--port N]   ask the node on this machine at PORT to leave gracefully
  actorserve --help

Node options:
  --port N            TCP port for clients and HTTP (default 8080; 0 picks a free port)
  --host ADDR         address to bind (default 127.0.0.1; 0.0.0.0 for all)
  --node-id ID        this node's id, reported in every result (default n1)
  --models A,B        models to serve (default ${builtinModelNames.join(',')})
  --workers K         workers (sessions) per model (default 1)
  --threads T         onnxruntime intra-op threads per worker (default per model)
  --inference-nice N  Linux nice (0-19) of inference threads, so the event loop gets the
                      cores first when both want them; 0 = same as the node (default 10)
  --inline-models A,B models run on the node's own thread instead of a worker_thread: for
                      runs of microseconds, where a thread's hand-offs cost more than the
                      run; "none" = every model on worker threads (default: iris)
  --max-batch N       cap on rows per batch (default per model)
  --preferred-batch N rows a batch is filled to when more are waiting; a request of up to
                      --max-batch rows still runs whole; half of it while high-priority work
                      keeps arriving (default per model: text-orientation 4)
  --max-queue N       cap on queued requests per model (default per model)
  --max-queue-delay-ms N
                      refuse (overloaded) a request whose expected queue wait is past N ms;
                      high priority counts only high work ahead, low is held to N/2;
                      0 turns it off (default 250)
  --pipeline N        batches a worker holds at once: the running one plus full (or high-
                      priority) batches staged behind it; 1 = one at a time (default 2)
  --max-in-flight N   unanswered requests per connection (default 1024)
  --max-frame-bytes N largest client frame in bytes (default 8388608)
  --heap-growth-percent N
                      how far V8's heap may grow past its live size before a full
                      collection; tensor traffic fools V8's own estimate into one every
                      ~100 ms. 0 = V8's adaptive default (default 300: V8's maximum, 4×)
                      (a node also wants V8's --initial-old-space-size=256, a floor under
                      that limit, given to node itself: \`node --initial-old-space-size=256
                      bin/actorserve.js\`; running bin/actorserve.js as a command does it)
  --parallel-scavenge auto|on|off
                      young-generation collections on V8's helper threads (on) or the
                      event loop's thread alone (off); auto: off on 2 cores or fewer
                      (a cgroup CPU limit counts), where the helpers wait for a core
                      beside inference (default auto)
  --log-level L       trace|debug|info|warn|error|silent (default info)
  --log-pretty        human-readable log lines instead of JSON (for a terminal)

Cluster options:
  --seeds H:P,H:P     nodes to join through (none: start a new cluster)
  --discovery dns:NAME[:PORT]
                      seeds from the A/AAAA records of NAME (a Kubernetes headless
                      Service), re-resolved every 5 s; PORT defaults to --port
  --cluster NAME      cluster name; peers of another cluster are refused (default actorserve)
  --cluster-secret S  shared secret for the peer handshake (HMAC-SHA256); required with
                      --seeds or --discovery. Prefer ACTORSERVE_CLUSTER_SECRET: flags show in ps
  --advertise H:P     address peers use to reach this node (default HOST:PORT)
  --epsilon E         bounded-load slack for keyed requests (default 0.25)

Limits and security:
  --max-queued-bytes N  memory budget for queued request tensors (default 536870912)
  --tensor-arena-bytes N
                      most memory kept for queued tensors so that their frames die young
                      (allocated as needed and kept; 0 turns it off; default: --max-queued-bytes)
  --max-buffered-bytes N results a client may leave unread before it is closed (default 8388608)
  --max-buffered-total-bytes N
                      results all clients together may leave unread; past it the ones
                      holding the most are closed, largest first (default 268435456)
  --max-receiving-bytes N
                      bytes of frames and HTTP bodies still arriving that all clients
                      together may hold; past it the ones holding the most are closed,
                      largest first (default 268435456)
  --max-connections N client WebSocket connections held at most; past it an upgrade gets
                      HTTP 503 with Retry-After (default 10000)
  --max-connections-per-address N  client WebSocket connections one remote address may
                      hold; past it an upgrade gets HTTP 503 with Retry-After (default: no
                      cap; leave it off where clients share a proxy's or a NAT's address)
  --max-sockets-per-address N  TCP connections of any kind (HTTP, WebSocket, dashboard) one
                      remote address may hold; past it a new one is dropped at accept, so
                      one host cannot fill the port with idle or trickling sockets (default:
                      no cap; set it above --max-connections-per-address)
  --trusted-proxies LIST
                      proxies (IP addresses, CIDR blocks, comma-separated) whose
                      X-Forwarded-For names the client: behind a load balancer, callers
                      get their queue shares and --max-connections-per-address by their
                      own addresses (default: none; the header is ignored)
  --client-ping-ms N  ping every client this often; one that answers neither the ping nor
                      with a frame by the next is closed and its queued work cancelled
                      (default 20000; 0 turns it off)
  --auth-tokens FILE  client tokens, one per line; clients send Authorization: Bearer TOKEN
                      or a first frame {t:"hello", token}. Env: ACTORSERVE_AUTH_TOKENS=a,b
  --admin-token T     token for /v1/admin/* and chaos (env ACTORSERVE_ADMIN_TOKEN); without
                      it admin calls are accepted from this machine only
  --admin-token-file FILE  admin tokens, one per line, instead (a token on the command line
                      is visible to every user of the machine in ps); leave uses the first
  --tls-cert FILE --tls-key FILE
                      serve wss:// and https://; peers are dialled with wss://
  --tls-ca FILE       CA that signed the peers' certificates (default: system CAs)

Operations:
  --model-path NAME=FILE  load model NAME from FILE instead of its built-in source (repeatable)
  --chaos             enable fault injection at POST /v1/admin/chaos (needs --admin-token)
  --run-timeout-ms N  a batch running longer (counting only time the node itself runs) is a hung
                      worker: its thread is killed (default 30000)
  --restart-intensity R/T  at most R worker restarts in T ms, then the model gives up (default 5/10000)
  --strategy S        how a model's supervisor restarts workers: one_for_one (default),
                      one_for_all or rest_for_one

SIGTERM, SIGINT or \`actorserve leave\` make the node leave gracefully: it turns unready,
stops taking new work, finishes or passes on what it holds, then exits 0.
SIGHUP re-reads the files the node was started with. --auth-tokens FILE: clients whose
token is no longer in it are answered unauthorized and closed. --admin-token-file FILE: admin
calls are checked against the new tokens. --tls-cert, --tls-key, --tls-ca: new connections get
the new certificate, open ones keep theirs, peers are dialled trusting the new CA. A file that
cannot be read, holds no token, or a key that is not the certificate's changes nothing of its
kind. With none of these, SIGHUP ends the node as it ends any process.

Environment: ACTORSERVE_PORT, ACTORSERVE_NODE_ID, ACTORSERVE_MODELS, ACTORSERVE_SEEDS,
ACTORSERVE_CLUSTER_SECRET set the same defaults as the flags of those names.
`;

const intOpt = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new RangeError(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
};

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      port: { type: 'string' },
      host: { type: 'string' },
      'node-id': { type: 'string' },
      models: { type: 'string' },
      workers: { type: 'string' },
      threads: { type: 'string' },
      'max-batch': { type: 'string' },
      'preferred-batch': { type: 'string' },
      'inline-models': { type: 'string' },
      'max-queue': { type: 'string' },
      'max-queue-delay-ms': { type: 'string' },
      pipeline: { type: 'string' },
      'inference-nice': { type: 'string' },
      'heap-growth-percent': { type: 'string' },
      'parallel-scavenge': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'max-frame-bytes': { type: 'string' },
      'log-level': { type: 'string' },
      'log-pretty': { type: 'boolean' },
      seeds: { type: 'string' },
      discovery: { type: 'string' },
      cluster: { type: 'string' },
      'cluster-secret': { type: 'string' },
      advertise: { type: 'string' },
      epsilon: { type: 'string' },
      'max-queued-bytes': { type: 'string' },
      'tensor-arena-bytes': { type: 'string' },
      'max-buffered-bytes': { type: 'string' },
      'max-buffered-total-bytes': { type: 'string' },
      'max-connections': { type: 'string' },
      'client-ping-ms': { type: 'string' },
      'max-connections-per-address': { type: 'string' },
      'max-sockets-per-address': { type: 'string' },
      'trusted-proxies': { type: 'string' },
      'max-receiving-bytes': { type: 'string' },
      'auth-tokens': { type: 'string' },
      'admin-token': { type: 'string' },
      'admin-token-file': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'model-path': { type: 'string', multiple: true },
      chaos: { type: 'boolean' },
      'run-timeout-ms': { type: 'string' },
      'restart-intensity': { type: 'string' },
      strategy: { type: 'string' },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (positionals.length > 1 || !['node', 'leave'].includes(positionals[0]!)) throw new RangeError(`unknown command ${JSON.stringify(positionals.join(' '))}`);
  const port = intOpt('port', values.port ?? process.env['ACTORSERVE_PORT']) ?? 8080;
  const adminTokenFile = values['admin-token-file'];
  if (adminTokenFile !== undefined && values['admin-token'] !== undefined) throw new RangeError('give --admin-token or --admin-token-file, not both');
  const adminToken = values['admin-token'] ?? (adminTokenFile === undefined ? process.env['ACTORSERVE_ADMIN_TOKEN'] : undefined);
  if (positionals[0] === 'leave') return leave(port, adminTokenFile !== undefined ? tokensInFile(adminTokenFile)[0] : adminToken, Boolean(values['tls-cert']));
  const adminTokens = adminTokenFile !== undefined ? TokenSet.fromFile(adminTokenFile) : adminToken ? new TokenSet([adminToken]) : undefined;

  const level = values['log-level'] ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new RangeError(`--log-level ${level} is not a level`);
  const nodeId = values['node-id'] ?? process.env['ACTORSERVE_NODE_ID'] ?? 'n1';
  const log = createLogger({ level: level as 'info', pretty: values['log-pretty'] ?? false });
  const names = (values.models ?? process.env['ACTORSERVE_MODELS'] ?? builtinModelNames.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  const overrides: ModelOverrides = {};
  const set = (k: Exclude<keyof ModelOverrides, 'paths' | 'inlineModels'>, v: number | undefined) => { if (v !== undefined) overrides[k] = v; };
  for (const spec of values['model-path'] ?? []) {
    const m = /^([^=]+)=(.+)$/.exec(spec);
    if (!m) throw new RangeError(`--model-path must be NAME=FILE, got ${JSON.stringify(spec)}`);
    (overrides.paths ??= {})[m[1]!] = m[2]!;
  }
  set('workers', intOpt('workers', values.workers));
  set('intraOpThreads', intOpt('threads', values.threads));
  set('maxBatch', intOpt('max-batch', values['max-batch']));
  set('preferredBatch', intOpt('preferred-batch', values['preferred-batch']));
  set('maxQueue', intOpt('max-queue', values['max-queue']));
  set('maxQueueDelayMs', intOpt('max-queue-delay-ms', values['max-queue-delay-ms']));
  set('pipeline', intOpt('pipeline', values.pipeline));
  set('inferenceNice', intOpt('inference-nice', values['inference-nice']));
  const inline = values['inline-models'];
  if (inline !== undefined) overrides.inlineModels = inline === 'none' ? [] : inline.split(',').map((s) => s.trim()).filter(Boolean);
  const models = resolveModels(names, overrides);
  // Signal handlers go in before the node's first log line: a SIGTERM while models load, or in the instant
  // between the node's `listening` line and the return of start(), would otherwise take the default action
  // and kill the process by the signal. Before start() returns there is nothing to drain: it exits at once.
  let node: ActorserveNode | undefined;
  const shutdown = (signal: string) => {
    log.info({ signal, started: node !== undefined }, 'leaving on signal');
    if (node === undefined) process.exit(0);
    node.leave().catch((e: Error) => log.error({ err: e.message }, 'error while leaving'));
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  const heapGrowthPercent = intOpt('heap-growth-percent', values['heap-growth-percent']) ?? DEFAULT_HEAP_GROWTH_PERCENT;
  applyHeapGrowth(heapGrowthPercent);
  const cores = usableCores();
  const parallelScavenge = applyParallelScavenge(values['parallel-scavenge'] ?? 'auto', cores);
  const oldSpaceFloor = oldSpaceFloorMib();
  log.info({ heapGrowthPercent, parallelScavenge, cores, oldSpaceFloorMiB: oldSpaceFloor ?? null }, 'V8 collector settings');
  if (oldSpaceFloor === undefined) {
    log.warn({ flag: OLD_SPACE_FLOOR_FLAG }, 'node started without an old-generation floor: under heavy tensor traffic V8 runs a full collection every few seconds, each a stall of several ms; start it as `node FLAG bin/actorserve.js` (bin/actorserve.js run as a command passes it)');
  }

  if (names.includes('iris') && !existsSync(irisModelPath)) {
    const r = buildIrisModel(irisModelPath);
    log.info({ testAccuracy: r.testAccuracy, path: irisModelPath }, 'built the iris model');
  }

  const secret = values['cluster-secret'] ?? process.env['ACTORSERVE_CLUSTER_SECRET'];
  let seeds = (values.seeds ?? process.env['ACTORSERVE_SEEDS'] ?? '').split(',').map((x) => x.trim()).filter(Boolean);
  const discovery = values.discovery ? parseDiscovery(values.discovery, port) : undefined;
  if (discovery) seeds = [...seeds, ...(await discovery.resolve())];
  let epsilon: number | undefined;
  if (values.epsilon !== undefined) {
    epsilon = Number(values.epsilon);
    if (!(epsilon > 0)) throw new RangeError(`--epsilon must be a number > 0, got ${values.epsilon}`);
  }
  const maxInFlight = intOpt('max-in-flight', values['max-in-flight']);
  const maxQueuedBytes = intOpt('max-queued-bytes', values['max-queued-bytes']);
  const tensorArenaBytes = intOpt('tensor-arena-bytes', values['tensor-arena-bytes']);
  const runTimeoutMs = intOpt('run-timeout-ms', values['run-timeout-ms']);
  const supervision: Partial<SupervisionSettings> = {};
  if (values['restart-intensity'] !== undefined) {
    const m = /^(\d+)\/(\d+)$/.exec(values['restart-intensity']);
    if (!m) throw new RangeError(`--restart-intensity must be R/T (restarts/ms), got ${JSON.stringify(values['restart-intensity'])}`);
    supervision.intensity = Number(m[1]);
    supervision.periodMs = Number(m[2]);
  }
  if (values.strategy !== undefined) {
    if (!['one_for_one', 'one_for_all', 'rest_for_one'].includes(values.strategy)) throw new RangeError(`--strategy must be one_for_one, one_for_all or rest_for_one, got ${values.strategy}`);
    supervision.strategy = values.strategy as SupervisionSettings['strategy'];
  }
  const maxBufferedBytes = intOpt('max-buffered-bytes', values['max-buffered-bytes']);
  const maxBufferedTotalBytes = intOpt('max-buffered-total-bytes', values['max-buffered-total-bytes']);
  const maxConnections = intOpt('max-connections', values['max-connections']);
  const clientPingMs = intOpt('client-ping-ms', values['client-ping-ms']);
  const maxConnectionsPerAddress = intOpt('max-connections-per-address', values['max-connections-per-address']);
  const maxSocketsPerAddress = intOpt('max-sockets-per-address', values['max-sockets-per-address']);
  const trustedProxies = values['trusted-proxies']?.split(',').map((s) => s.trim()).filter(Boolean);
  const maxReceivingBytes = intOpt('max-receiving-bytes', values['max-receiving-bytes']);
  const envTokens = process.env['ACTORSERVE_AUTH_TOKENS']?.split(',').map((t) => t.trim()).filter(Boolean);
  const authTokens = values['auth-tokens'] ? TokenSet.fromFile(values['auth-tokens']) : envTokens?.length ? new TokenSet(envTokens) : undefined;
  if (Boolean(values['tls-cert']) !== Boolean(values['tls-key'])) throw new RangeError('--tls-cert and --tls-key go together');
  // Without a certificate the node serves and dials plain ws://, and a CA would silently verify nothing.
  if (values['tls-ca'] !== undefined && !values['tls-cert']) throw new RangeError('--tls-ca needs --tls-cert and --tls-key (a node without them serves and dials plain ws://)');
  const tlsFiles = values['tls-cert'] && values['tls-key'] ? { cert: values['tls-cert'], key: values['tls-key'], ca: values['tls-ca'] } : undefined;
  const tls = tlsFiles ? readTlsFiles(tlsFiles) : undefined;
  const maxFrameBytes = intOpt('max-frame-bytes', values['max-frame-bytes']);
  // With a tokens file, an admin tokens file or a certificate, SIGHUP re-reads them and never ends the node; with none,
  // SIGHUP keeps its default. Each is replaced only whole and valid; what fails to load stays as it was.
  const reloads: { files: unknown; apply: (n: ActorserveNode) => void; failed: string }[] = [];
  const tokensFile = values['auth-tokens'];
  if (tokensFile !== undefined) {
    reloads.push({ files: tokensFile, apply: (n) => n.replaceClientTokens(TokenSet.fromFile(tokensFile)), failed: 'client tokens not reloaded; the ones in use stay' });
  }
  if (adminTokenFile !== undefined) {
    reloads.push({ files: adminTokenFile, apply: (n) => n.replaceAdminTokens(TokenSet.fromFile(adminTokenFile)), failed: 'admin tokens not reloaded; the ones in use stay' });
  }
  if (tlsFiles !== undefined) {
    reloads.push({ files: tlsFiles, apply: (n) => void n.replaceCertificate(readTlsFiles(tlsFiles)), failed: 'TLS certificate not reloaded; the one in use stays' });
  }
  if (reloads.length > 0) process.on('SIGHUP', () => {
    if (node === undefined) return log.warn({ signal: 'SIGHUP' }, 'nothing reloaded: the node is still starting');
    for (const r of reloads) {
      try {
        r.apply(node);
      } catch (e) {
        log.error({ signal: 'SIGHUP', files: r.files, err: (e as Error).message }, r.failed);
      }
    }
  });
  node = await ActorserveNode.start({
    nodeId,
    models,
    host: values.host ?? '127.0.0.1',
    port,
    seeds,
    ...(secret ? { clusterSecret: secret } : {}),
    ...(values.cluster ? { cluster: values.cluster } : {}),
    ...(values.advertise ? { advertise: values.advertise } : {}),
    ...(discovery && !values.advertise ? { advertise: await discovery.advertise(port) } : {}),
    ...(epsilon !== undefined ? { epsilon } : {}),
    ...(maxInFlight !== undefined ? { maxInFlight } : {}),
    ...(maxQueuedBytes !== undefined ? { maxQueuedBytes } : {}),
    ...(tensorArenaBytes !== undefined ? { tensorArenaBytes } : {}),
    ...(maxBufferedBytes !== undefined ? { maxBufferedBytes } : {}),
    ...(maxBufferedTotalBytes !== undefined ? { maxBufferedTotalBytes } : {}),
    ...(maxConnections !== undefined ? { maxConnections } : {}),
    ...(clientPingMs !== undefined ? { clientPingMs } : {}),
    ...(maxConnectionsPerAddress !== undefined ? { maxConnectionsPerAddress } : {}),
    ...(maxSocketsPerAddress !== undefined ? { maxSocketsPerAddress } : {}),
    ...(trustedProxies !== undefined ? { trustedProxies } : {}),
    ...(maxReceivingBytes !== undefined ? { maxReceivingBytes } : {}),
    ...(authTokens ? { authTokens } : {}),
    ...(adminTokens ? { adminToken: adminTokens } : {}),
    ...(tls ? { tls } : {}),
    ...(values.chaos ? { chaos: true } : {}),
    ...(runTimeoutMs !== undefined ? { runTimeoutMs } : {}),
    supervision,
    ...(maxFrameBytes !== undefined ? { maxFrameBytes } : {}),
    log,
  });

  if (discovery) {
    const t = setInterval(() => void discovery.resolve().then((addrs) => node.addSeeds(addrs), () => undefined), 5_000);
    t.unref();
  }
  await node.done;
  return 0;
}

async function leave(port: number, adminToken: string | undefined, tls: boolean): Promise<number> {
  if (tls) throw new RangeError('actorserve leave talks plain HTTP to the local node; with TLS, send SIGTERM instead');
  const res = await fetch(`http://127.0.0.1:${port}/v1/admin/leave`, {
    method: 'POST',
    ...(adminToken ? { headers: { authorization: `Bearer ${adminToken}` } } : {}),
  });
  if (res.status !== 202) {
    process.stderr.write(`actorserve leave: the node answered ${res.status} ${await res.text()}\n`);
    return 1;
  }
  // The node exits once drained; wait for its port to close so preStop hooks block until then.
  for (let i = 0; i < 600; i++) {
    try {
      await fetch(`http://127.0.0.1:${port}/v2/health/live`);
    } catch {
      return 0;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return 1;
}

/** `dns:NAME[:PORT]`: seeds from NAME's address records. */
function parseDiscovery(spec: string, defaultPort: number) {
  const m = /^dns:([A-Za-z0-9.-]+)(?::(\d{1,5}))?$/.exec(spec);
  if (!m) throw new RangeError(`--discovery must be dns:NAME[:PORT], got ${JSON.stringify(spec)}`);
  const name = m[1]!;
  const port = m[2] ? Number(m[2]) : defaultPort;
  const resolve = async (): Promise<string[]> => {
    const [v4, v6] = await Promise.all([dns.resolve4(name).catch(() => []), dns.resolve6(name).catch(() => [])]);
    return [...v4.map((a) => `${a}:${port}`), ...v6.map((a) => `[${a}]:${port}`)];
  };
  // Peers reach this pod at its own address: the first non-internal IPv4 address.
  const advertise = async (p: number) => {
    const ip = Object.values(networkInterfaces()).flat().find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    return `${ip ?? '127.0.0.1'}:${p}`;
  };
  return { resolve, advertise };
}
