/**
 * One actorserve node: an actor system with the models supervisor (a
 * ModelSupervisor per model), the router, the gateway (a Session per client
 * connection) and membership, behind one HTTP/WebSocket port.
 */
import './nactScheduling.js';
import { dispatch, query, spawnStateless, start, stop, type Ref } from 'nact';
import { IncomingMessage, type ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import { ActorserveError, CloseCode } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { Metrics, type ClosedConnection } from '../metrics/Metrics.js';
import { modelInfo, type ModelSpec } from '../models/registry.js';
import type { ThreadFaults } from '../models/threadProtocol.js';
import { encode } from '../transport/codec.js';
import type { MemberInfo, PeerMsg } from '../transport/peerProtocol.js';
import { PROTOCOL_VERSION, type ErrorFrame, type ResultFrame, type WelcomeFrame } from '../transport/protocol.js';
import { addressKey, json, startServer, type RunningServer } from '../transport/Server.js';
import { TrustedProxies } from '../transport/clientAddress.js';
import { overBudget, receivingBytes, SWEEP_MS, unreadBytes } from '../transport/byteBudget.js';
import type { NodeContext } from '../transport/http/context.js';
import { dashboardFeed, dashboardSampler, handleDashboard } from '../transport/http/dashboard.js';
import { handleOip } from '../transport/http/oip.js';
import { Membership, type MemberView } from './Membership.js';
import { admit } from './admit.js';
import { errorFrame, type BatcherStats, type InferRequest, type RouterMsg, type SessionMsg } from './messages.js';
import { spawnModelSupervisor, type ModelHandle } from './ModelSupervisor.js';
import { TensorArena } from './tensorArena.js';
import type { PhiOptions } from './PhiAccrual.js';
import { defaultSupervision, type SupervisionSettings } from './Supervision.js';
import { spawnRouter } from './Router.js';
import { spawnSession } from './Session.js';
import { applyChaos, checkChaos, type ChaosTarget } from '../chaos/Chaos.js';
import { readBody } from '../transport/http/body.js';
import { bearer, tokenDigest, TokenSet } from '../transport/Auth.js';
import { checkCertificate, type CertificateInfo, type TlsMaterial } from '../transport/Tls.js';
import { beat, type Liveness } from '../transport/keepalive.js';
import { decodeUntrusted } from '../transport/codec.js';
import { checkHello } from '../transport/protocol.js';

export interface NodeOptions {
  nodeId: string;
  models: ModelSpec[];
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** host:port other nodes use to reach this one. Default host:port as bound. */
  advertise?: string;
  /** Cluster name; peers in another cluster are refused. Default "actorserve". */
  cluster?: string;
  /** Shared secret for the peer handshake; without it the node takes no peers. */
  clusterSecret?: string;
  /** host:port of nodes to join through. */
  seeds?: readonly string[];
  /** Heartbeat interval. Default 200 ms. */
  heartbeatMs?: number;
  phi?: PhiOptions;
  /** ε of bounded-load hashing for keyed requests. Default 0.25. */
  epsilon?: number;
  /** Memory budget for queued and running request tensors on this node. Default 512 MiB. */
  maxQueuedBytes?: number;
  /** Most memory the tensor arena (tensorArena.ts) allocates; 0 turns it off. Default: the memory budget. */
  tensorArenaBytes?: number;
  /** Enable the chaos interface (node.chaos, and POST /v1/admin/chaos with the admin token). */
  chaos?: boolean;
  /** Client tokens: when set, every client and HTTP infer call must present one. */
  authTokens?: TokenSet;
  /** Admin token for /v1/admin/* (and chaos); without it, admin calls are taken from loopback only. */
  adminToken?: TokenSet;
  /** Serve wss:// and https:// with this PEM certificate and key, and dial peers over wss:// trusting `ca`. */
  tls?: TlsMaterial;
  /** Results a client may leave unread in its socket before it is closed. Default 8 MiB. */
  maxBufferedBytes?: number;
  /**
   * Results all clients together may leave unread in this node's memory; past
   * it the connections holding the most are closed, largest first, until the
   * rest fit (checked every 100 ms). Default 256 MiB.
   */
  maxBufferedTotalBytes?: number;
  /**
   * Bytes of frames not yet complete and of HTTP bodies being read that all
   * clients together may hold in this node's memory (each frame up to
   * `maxFrameBytes`, each body 4× that); past it the connections holding the
   * most are closed, largest first, until the rest fit (checked every
   * 100 ms). Default 256 MiB.
   */
  maxReceivingBytes?: number;
  /** Client WebSocket connections this node holds at most; past it an upgrade gets 503 with Retry-After. Default 10 000. */
  maxConnections?: number;
  /**
   * Client WebSocket connections one remote address may hold at most; past it an upgrade gets 503
   * with Retry-After, so one host cannot take every slot. Default: no cap (clients behind a proxy
   * or a NAT share its address).
   */
  maxConnectionsPerAddress?: number;
  /**
   * TCP connections of any kind (HTTP, WebSocket, dashboard) one remote address may hold; past it a
   * new one is dropped at accept. Default: no cap. Set it above `maxConnectionsPerAddress`.
   */
  maxSocketsPerAddress?: number;
  /**
   * Proxies (IP addresses and CIDR blocks) whose `X-Forwarded-For` names the client: behind a load
   * balancer, HTTP callers and WebSocket clients are then counted by their own addresses for the
   * queue shares and `maxConnectionsPerAddress` (src/transport/clientAddress.ts). `maxSocketsPerAddress`
   * counts TCP peers, before any header. Default: none (the header is ignored).
   */
  trustedProxies?: readonly string[];
  /**
   * Every this many ms the node pings each client; a client that has answered neither that ping
   * nor sent a frame by the next is taken for gone (a laptop shut, a phone off the network, a NAT
   * that forgot it) and closed, its queued work cancelled, so it stops holding a connection slot
   * and inference time. 0 turns it off. Default 20 000.
   */
  clientPingMs?: number;
  /** Requests one connection may have unanswered. Default 1024. */
  maxInFlight?: number;
  /** Largest client frame; bigger closes the connection with 1009. Default 8 MiB. */
  maxFrameBytes?: number;
  /**
   * How each model's supervisor treats its workers (a model's own settings win):
   * strategy, restart intensity, backoff. Default one_for_one, 5 restarts in 10 s, 10 ms doubling to 2 s.
   */
  supervision?: Partial<SupervisionSettings>;
  /** A batch running longer than this counts as a hung worker. Default 30 000 ms. */
  runTimeoutMs?: number;
  /** Fault injection in the inference threads (tests and --chaos only). */
  faults?: ThreadFaults;
  /** How long start() waits for the models to load. Default 60 000 ms. */
  loadTimeoutMs?: number;
  /** How long a new node waits for its seeds before declaring itself up alone. Default 3 000 ms. */
  joinTimeoutMs?: number;
  log?: Logger;
}

export class ActorserveNode {
  readonly incarnation = Date.now() * 1000 + Math.floor(Math.random() * 1000);
  /** Late replies dropped by the origins' outstanding tables. */
  duplicatesDropped = 0;
  /** Requests this node's clients have sent and not yet had answered. */
  outstanding = 0;
  private ready = false;
  private leaving: Promise<void> | undefined;
  private stopped: Promise<void> | undefined;
  private server: RunningServer | undefined;
  private membership: Membership | undefined;
  private readonly system = start() as Ref<never>;
  readonly models = new Map<string, ModelHandle>();
  private readonly localLoad = new Map<string, number>();
  private readonly queues = new Map<string, { queued: number; running: number }>();
  readonly metrics: Metrics;
  private http!: NodeContext;
  private auth: { clients: TokenSet | undefined; admin: TokenSet | undefined } = { clients: undefined, admin: undefined };
  private budget = { used: 0, max: 0 };
  private arena: TensorArena | undefined;
  /** The certificate this node serves (TLS only). */
  private certificate: CertificateInfo | undefined;
  /** What peer links dial with; read at every dial, so a CA replaced on SIGHUP reaches the next one. */
  private peerTls: { ca?: string | Buffer } | undefined;
  /** Bytes of request tensors queued or running on this node. */
  get queuedBytes(): number {
    return this.budget.used;
  }
  /** Started workers per model, for per-model readiness. */
  private readonly workersUp = new Map<string, number>();
  /** Models whose workers all gave up: no longer offered to the cluster. */
  private readonly withdrawn = new Set<string>();
  private readonly sessions = new Map<string, Ref<SessionMsg>>();
  /** Every client connection, from its upgrade to its close. */
  private readonly clients = new Map<WebSocket, ClientConnection>();
  private clientSweep: NodeJS.Timeout | undefined;
  private clientPing: NodeJS.Timeout | undefined;
  /** HTTP request bodies being read, with the bytes each holds so far. */
  private readonly bodiesReading = new Map<IncomingMessage, number>();
  /** Resolved when the node has stopped, whatever stopped it. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  private constructor(readonly nodeId: string, readonly log: Logger) {
    this.done = new Promise((r) => (this.resolveDone = r));
    this.metrics = new Metrics({ node: nodeId }, {
      queues: () => this.queueStats(),
      memberStatuses: () => this.clusterView().map((m) => m.status),
      queuedBytes: () => this.budget.used,
      arenaBytes: () => this.arena?.bytes ?? 0,
      arenaLentBytes: () => this.arena?.lentOut ?? 0,
      clientConnections: () => this.clients.size,
      clientUnreadBytes: () => sum(this.clients.keys(), unreadBytes),
      clientReceivingBytes: () => sum(this.receivingHolders(), this.receivingHeld),
      certificate: () => this.certificate,
    });
  }

  /** Queue and running requests per model on this node, as the batchers last reported. */
  queueStats(): Record<string, { queued: number; running: number }> {
    return Object.fromEntries(this.queues);
  }

  get port(): number {
    if (!this.server) throw new Error('node is not listening');
    return this.server.port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/stream`;
  }

  get addr(): string {
    return this.membership?.self.addr ?? `127.0.0.1:${this.port}`;
  }

  isReady(): boolean {
    return this.ready;
  }

  /** More nodes to join through (DNS discovery finds them over time). */
  addSeeds(addrs: readonly string[]): void {
    this.membership?.addSeeds(addrs);
  }

  /**
   * Replaces the client tokens (the CLI re-reads `--auth-tokens` on SIGHUP). New connections and
   * HTTP requests are checked against the new set at once; a connection that authenticated with a
   * token no longer in it is answered `unauthorized` and closed with 1008, its queued work
   * cancelled as on any close. Returns how many connections it closed.
   * @throws RangeError when this node runs without client tokens: there is none to replace.
   */
  replaceClientTokens(tokens: TokenSet): number {
    if (!this.auth.clients) throw new RangeError('this node runs without client tokens (start it with --auth-tokens)');
    this.auth.clients = tokens;
    let closed = 0;
    for (const [ws, client] of this.clients) {
      if (client.token === undefined || tokens.hasDigest(client.token)) continue;
      client.log.info('client closed: its token was revoked');
      this.metrics.connectionClosed('token_revoked');
      closeUnauthorized(ws, 'token revoked');
      closed++;
    }
    this.log.info({ tokens: tokens.size, closed }, 'client tokens replaced');
    return closed;
  }

  /**
   * Replaces the admin tokens (the CLI re-reads `--admin-token-file` on SIGHUP): admin calls are
   * checked against the new set from the next one.
   * @throws RangeError when this node runs without an admin token (admin calls are then taken from
   * this machine only, and a reload does not change that).
   */
  replaceAdminTokens(tokens: TokenSet): void {
    if (!this.auth.admin) throw new RangeError('this node runs without an admin token (start it with --admin-token-file)');
    this.auth.admin = tokens;
    this.log.info({ tokens: tokens.size }, 'admin tokens replaced');
  }

  /**
   * Serves a renewed certificate and key (the CLI re-reads `--tls-cert` and `--tls-key` on SIGHUP) to
   * every connection from now on; connections already open keep theirs. A `ca` replaces the one peer
   * links verify peers with, from their next dial. Returns what the log says of the new certificate.
   * @throws RangeError when this node serves without TLS; Error when the key is not the certificate's
   * or either does not parse, and then nothing is replaced.
   */
  replaceCertificate(tls: TlsMaterial): CertificateInfo {
    if (!this.server || this.certificate === undefined) throw new RangeError('this node serves without TLS (start it with --tls-cert and --tls-key)');
    const info = checkCertificate(tls);
    this.server.setCertificate(tls);
    this.certificate = info;
    if (tls.ca !== undefined && this.peerTls) this.peerTls.ca = tls.ca;
    this.log.info({ certificate: info, ca: tls.ca !== undefined }, 'TLS certificate replaced');
    return info;
  }

  /**
   * Closes the clients that gave no sign of life (a pong or a frame) since the last ping, and pings
   * the rest. A client the node itself stopped reading (inbound flow control) is not judged: its
   * pong may be waiting, unread, behind its own frames. The dashboard's feeds are judged the same way.
   */
  private pingClients(): void {
    for (const [ws, client] of this.clients) {
      if (ws.readyState !== ws.OPEN || ws.isPaused || beat(ws, client)) continue;
      client.log.info('client closed: no answer to a ping');
      this.metrics.connectionClosed('ping_timeout');
      ws.terminate();
    }
    const feedsGone = dashboardSampler(this.http)?.pingFeeds() ?? 0;
    if (feedsGone > 0) this.log.info({ feeds: feedsGone }, 'dashboard feeds closed: no answer to a ping');
  }

  /** The cluster as this node sees it, itself included. */
  clusterView(): MemberView[] {
    return this.membership?.view() ?? [];
  }

  /**
   * Starts the actor tree, loads every model, listens and joins the cluster.
   * @throws RangeError for bad options; Error when a model cannot be loaded or the port bound.
   */
  static async start(opts: NodeOptions): Promise<ActorserveNode> {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(opts.nodeId)) throw new RangeError(`node id must match [A-Za-z0-9._-]{1,64}, got ${JSON.stringify(opts.nodeId)}`);
    if (opts.models.length === 0) throw new RangeError('a node needs at least one model');
    const maxInFlight = positive('maxInFlight', opts.maxInFlight ?? 1024);
    const maxFrameBytes = positive('maxFrameBytes', opts.maxFrameBytes ?? 8 * 1024 * 1024);
    const supervision: SupervisionSettings = { ...defaultSupervision, ...opts.supervision };
    const runTimeoutMs = positive('runTimeoutMs', opts.runTimeoutMs ?? 30_000);
    const seeds = opts.seeds ?? [];
    for (const s of seeds) if (!/^[^\s/]+:\d{1,5}$/.test(s)) throw new RangeError(`seed ${JSON.stringify(s)} is not host:port`);
    if (seeds.length > 0 && !opts.clusterSecret) throw new RangeError('joining a cluster needs a cluster secret (--cluster-secret or ACTORSERVE_CLUSTER_SECRET)');
    const log = (opts.log ?? createLogger()).child({ node: opts.nodeId });
    const node = new ActorserveNode(opts.nodeId, log);
    try {
      node.auth = { clients: opts.authTokens, admin: opts.adminToken };
    node.chaosEnabled = opts.chaos ?? false;
    const maxBufferedBytes = positive('maxBufferedBytes', opts.maxBufferedBytes ?? 8 * 1024 * 1024);
    const maxBufferedTotalBytes = positive('maxBufferedTotalBytes', opts.maxBufferedTotalBytes ?? 256 * 1024 * 1024);
    const maxConnections = positive('maxConnections', opts.maxConnections ?? 10_000);
    const maxReceivingBytes = positive('maxReceivingBytes', opts.maxReceivingBytes ?? 256 * 1024 * 1024);
    const maxConnectionsPerAddress = opts.maxConnectionsPerAddress === undefined ? undefined : positive('maxConnectionsPerAddress', opts.maxConnectionsPerAddress);
    const maxSocketsPerAddress = opts.maxSocketsPerAddress === undefined ? undefined : positive('maxSocketsPerAddress', opts.maxSocketsPerAddress);
    const proxies = new TrustedProxies(opts.trustedProxies ?? []);
    const clientPingMs = opts.clientPingMs ?? 20_000;
    if (!Number.isInteger(clientPingMs) || clientPingMs < 0) throw new RangeError(`clientPingMs must be a non-negative integer, got ${clientPingMs}`);
    await node.boot(opts, { maxInFlight, maxFrameBytes, supervision, runTimeoutMs, seeds, maxBufferedBytes, maxBufferedTotalBytes, maxConnections, maxConnectionsPerAddress, maxSocketsPerAddress, maxReceivingBytes, clientPingMs, clientAddress: (req) => proxies.clientAddress(req) });
    } catch (e) {
      await node.stop();
      throw e;
    }
    return node;
  }

  private async boot(
    opts: NodeOptions,
    c: {
      maxInFlight: number;
      maxFrameBytes: number;
      supervision: SupervisionSettings;
      runTimeoutMs: number;
      seeds: readonly string[];
      maxBufferedBytes: number;
      maxBufferedTotalBytes: number;
      maxConnections: number;
      maxReceivingBytes: number;
      clientPingMs: number;
      maxConnectionsPerAddress: number | undefined;
      maxSocketsPerAddress: number | undefined;
      /** The address a client is counted by (`trustedProxies`). */
      clientAddress: (req: IncomingMessage) => string;
    },
  ): Promise<void> {
    const { log, system } = this;
    if (opts.tls) {
      this.certificate = checkCertificate(opts.tls);
      this.peerTls = opts.tls.ca !== undefined ? { ca: opts.tls.ca } : {};
    }
    const modelsSup = spawnStateless(system, () => undefined, 'models');
    const budget = { used: 0, max: positive('maxQueuedBytes', opts.maxQueuedBytes ?? 512 * 1024 * 1024) };
    this.budget = budget;
    const arenaBytes = opts.tensorArenaBytes ?? budget.max;
    const arena = arenaBytes > 0 ? new TensorArena(arenaBytes) : undefined;
    this.arena = arena;
    for (const spec of opts.models) {
      this.localLoad.set(spec.name, 0);
      this.queues.set(spec.name, { queued: 0, running: 0 });
      this.models.set(spec.name, spawnModelSupervisor(modelsSup, {
        spec,
        nodeId: this.nodeId,
        supervision: { ...c.supervision, ...spec.supervision },
        // The node's answer to a model that gives up: stop offering it (its queue has moved to other nodes).
        onEscalate: () => this.log.error({ model: spec.name }, 'model withdrawn after its supervisor gave up'),
        runTimeoutMs: c.runTimeoutMs,
        ...(opts.faults ? { faults: opts.faults } : {}),
        log,
        metrics: this.metrics,
        budget,
        ...(arena ? { arena } : {}),
        handoff: (req, canRunHere) => dispatch(router, { t: 'handoff', req, canRunHere }),
        onGaveUp: () => {
          this.withdrawn.add(spec.name);
          this.membership?.setModels(opts.models.map((m) => m.name).filter((m) => !this.withdrawn.has(m)));
        },
        onLoad: (queued, running, ready) => {
          this.workersUp.set(spec.name, ready);
          this.localLoad.set(spec.name, queued + running);
          this.queues.set(spec.name, { queued, running });
        },
      }));
    }
    const specs = new Map(opts.models.map((m) => [m.name, m]));
    this.http = {
      nodeId: this.nodeId,
      models: opts.models,
      isReady: () => this.ready,
      modelReady: (name) => (this.workersUp.get(name) ?? 0) > 0,
      submit: (f, caller) => this.submit(f, caller),
      clientAddress: c.clientAddress,
      clusterView: () => this.clusterView(),
      queueStats: () => this.queueStats(),
      metrics: this.metrics,
      maxBodyBytes: c.maxFrameBytes * 4,
      bodiesReading: this.bodiesReading,
    };
    const send = (nodeId: string, msg: PeerMsg) => this.membership?.send(nodeId, msg) ?? false;
    // Replies for requests that came from peers go back to their origin node. A peer that hands work
    // off (it leaves, or its workers gave up) may hand it back to its origin, this node: there is no
    // link to ourselves, so the reply goes to our router as a peer's would, which settles it there.
    const outbox = spawnStateless(system, (msg: SessionMsg) => {
      if (msg.t !== 'reply') return;
      const origin = msg.key.split('/')[0]!;
      if (origin === this.nodeId) dispatch(router, { t: 'remoteReply', from: this.nodeId, key: msg.key, frame: msg.frame });
      else send(origin, { t: 'reply', key: msg.key, frame: msg.frame });
    }, 'outbox');
    const router: Ref<RouterMsg> = spawnRouter(system, {
      nodeId: this.nodeId,
      batchers: new Map([...this.models].map(([k, v]) => [k, v.batcher])),
      specs,
      localLoad: this.localLoad,
      localReady: this.workersUp,
      send,
      outbox,
      sessions: this.sessions,
      ...(opts.epsilon !== undefined ? { epsilon: opts.epsilon } : {}),
      log,
    });
    const gateway = spawnStateless(system, () => undefined, 'gateway');
    this.startHttpEntry(gateway, router, specs);

    const welcome = encode({
      t: 'welcome',
      protocol: PROTOCOL_VERSION,
      node: this.nodeId,
      models: opts.models.map(modelInfo),
      limits: { maxInFlight: c.maxInFlight, maxFrameBytes: c.maxFrameBytes },
    } satisfies WelcomeFrame);

    let sessionCount = 0;
    this.server = await startServer({
      host: opts.host ?? '127.0.0.1',
      port: opts.port ?? 8080,
      maxFrameBytes: c.maxFrameBytes,
      ...(opts.tls ? { tls: opts.tls } : {}),
      maxPeerFrameBytes: Math.max(64 * 1024 * 1024, 4 * c.maxFrameBytes),
      isReady: () => this.ready,
      acceptClients: () => !this.leaving,
      maxClients: c.maxConnections,
      ...(c.maxConnectionsPerAddress !== undefined ? { maxClientsPerAddress: c.maxConnectionsPerAddress } : {}),
      ...(c.maxSocketsPerAddress !== undefined ? { maxSocketsPerAddress: c.maxSocketsPerAddress } : {}),
      clientAddress: c.clientAddress,
      onRefused: (reason) => this.metrics.connectionRefused(reason),
      routes: (req, res, path) => this.route(req, res, path) || handleOip(req, res, path, this.http) || handleDashboard(req, res, path, this.http),
      upgrades: { '/v1/dashboard/ws': (ws) => dashboardFeed(ws, this.http) },
      onPeer: (ws, req) => (this.membership ? this.membership.accept(ws, req) : ws.close(CloseCode.policyViolation, 'unauthorized')),
      authorizeClient: (req) => {
        // A wrong header is refused before the upgrade; no header may still authenticate with a hello frame.
        const token = bearer(req);
        return !this.auth.clients || token === undefined || this.auth.clients.has(token);
      },
      onClient: (ws, req) => {
        const client: ClientConnection = { log, awaitingPong: false };
        this.clients.set(ws, client);
        ws.once('close', () => this.clients.delete(ws));
        ws.on('pong', () => void (client.awaitingPong = false));
        const open = (token?: Buffer) => {
          if (token !== undefined) client.token = token;
          const name = `session-${sessionCount++}`;
          const slog = log.child({ session: name });
          client.log = slog;
          slog.debug({ remote: c.clientAddress(req) }, 'client connected');
          let frameHandled = () => {};
          const session = spawnSession(gateway, {
            onFrameHandled: () => frameHandled(),
            name,
            keyPrefix: `${this.nodeId}/${this.incarnation}/${name}`,
            ws,
            models: specs,
            router,
            maxInFlight: c.maxInFlight,
            maxBufferedBytes: c.maxBufferedBytes,
            onSlowConsumer: () => this.metrics.connectionClosed('slow_reader'),
            log: slog,
            metrics: this.metrics,
            onDuplicate: () => {
              this.duplicatesDropped++;
              this.metrics.duplicates.inc();
            },
            onOutstanding: (d) => void (this.outstanding += d),
          });
          this.sessions.set(name, session);
          // Inbound flow control: nact mailboxes are unbounded, so stop reading a client whose frames
          // pile up unhandled; TCP then pushes back on it, and work already queued (and the batchers'
          // own messages) is not stuck behind a flood.
          let unhandled = 0;
          let paused = false;
          frameHandled = () => {
            unhandled--;
            if (paused && unhandled <= INBOUND_LOW_WATER) {
              paused = false;
              ws.resume();
            }
          };
          ws.on('message', (data: Buffer, isBinary) => {
            if (!isBinary) return ws.close(CloseCode.unsupportedData, 'frames must be binary msgpack');
            client.awaitingPong = false;
            unhandled++;
            if (!paused && unhandled >= INBOUND_HIGH_WATER) {
              paused = true;
              ws.pause();
            }
            dispatch(session, { t: 'frame', data });
          });
          ws.on('close', (code) => {
            slog.debug({ code }, 'client disconnected');
            this.sessions.delete(name);
            dispatch(session, { t: 'closed' });
          });
          ws.send(welcome);
        };
        ws.on('error', (e) => log.info({ err: e.message }, 'client socket error'));
        if (!this.auth.clients) return open();
        // A bearer header was checked at the upgrade; without one, the token comes in a hello frame.
        const token = bearer(req);
        if (token !== undefined) return open(tokenDigest(token));
        awaitHello(ws, () => this.auth.clients, log, open, () => this.metrics.connectionRefused('unauthorized'));
      },
    });
    this.clientSweep = setInterval(() => {
      this.closeLargest(this.clients.keys(), unreadBytes, c.maxBufferedTotalBytes, 'node_unread_budget', "slow consumer closed at the node's unread-output budget");
      this.closeLargest(this.receivingHolders(), this.receivingHeld, c.maxReceivingBytes, 'node_receiving_budget', "client closed at the node's budget for frames and bodies still arriving");
    }, SWEEP_MS);
    this.clientSweep.unref();
    if (c.clientPingMs > 0) {
      this.clientPing = setInterval(() => this.pingClients(), c.clientPingMs);
      this.clientPing.unref();
    }

    const self: MemberInfo = {
      nodeId: this.nodeId,
      incarnation: this.incarnation,
      addr: opts.advertise ?? `${opts.host && opts.host !== '0.0.0.0' && opts.host !== '::' ? opts.host : '127.0.0.1'}:${this.server.port}`,
      models: opts.models.map((m) => m.name),
      state: 'joining',
    };
    this.membership = new Membership({
      self,
      cluster: opts.cluster ?? 'actorserve',
      secret: opts.clusterSecret,
      seeds: c.seeds,
      maxPayload: Math.max(64 * 1024 * 1024, 4 * c.maxFrameBytes),
      ...(opts.heartbeatMs !== undefined ? { heartbeatMs: opts.heartbeatMs } : {}),
      ...(opts.phi ? { phi: opts.phi } : {}),
      log,
      metrics: this.metrics,
      ...(this.peerTls ? { tls: this.peerTls } : {}),
      localLoad: () => Object.fromEntries(this.localLoad),
      onView: (members, me) => dispatch(router, { t: 'view', members, self: me }),
      onNodeLost: (nodeId) => dispatch(router, { t: 'nodeLost', nodeId }),
      onMessage: (from, msg) => {
        switch (msg.t) {
          case 'infer':
            return dispatch(router, { t: 'remoteInfer', from, req: msg.req });
          case 'reply':
            return dispatch(router, { t: 'remoteReply', from, key: msg.key, frame: msg.frame });
          case 'cancel':
            return dispatch(router, { t: 'remoteCancel', from, model: msg.model, key: msg.key });
          case 'moved':
            return dispatch(router, { t: 'moved', key: msg.key, to: msg.to });
          case 'hb':
            return;
        }
      },
    });
    this.membership.start();

    await this.waitForModels(opts.loadTimeoutMs ?? 60_000);
    if (this.withdrawn.size === this.models.size) throw new Error(`no model could be loaded (${[...this.withdrawn].join(', ')})`);
    if (this.withdrawn.size > 0) this.membership.setModels(opts.models.map((m) => m.name).filter((m) => !this.withdrawn.has(m)));
    if (c.seeds.length > 0) await this.waitForPeers(opts.joinTimeoutMs ?? 3_000);
    this.membership.setSelfState('up');
    this.ready = true;
    log.info({ port: this.port, addr: self.addr, models: self.models, incarnation: this.incarnation, seeds: c.seeds, ...(this.certificate ? { certificate: this.certificate } : {}) }, 'listening');
  }

  /** What the receiving budget bounds: client connections (frames still arriving) and HTTP requests mid-body. */
  private *receivingHolders(): Generator<WebSocket | IncomingMessage> {
    yield* this.clients.keys();
    yield* this.bodiesReading.keys();
  }

  private readonly receivingHeld = (h: WebSocket | IncomingMessage): number =>
    h instanceof IncomingMessage ? (this.bodiesReading.get(h) ?? 0) : receivingBytes(h);

  /**
   * Closes the holders (client connections, HTTP requests mid-body) holding the most by `held`
   * while all of them together hold more than `budget`.
   */
  private closeLargest<H extends WebSocket | IncomingMessage>(holders: Iterable<H>, held: (h: H) => number, budget: number, reason: ClosedConnection, msg: string): void {
    const { victims, total } = overBudget(holders, held, budget);
    for (const h of victims) {
      const fields = { heldBytes: held(h), totalBytes: total, limit: budget };
      this.metrics.connectionClosed(reason);
      if (h instanceof IncomingMessage) {
        this.log.warn({ ...fields, url: h.url }, msg);
        // Its body read fails with the socket; nothing was admitted yet.
        h.socket.destroy();
      } else {
        this.clients.get(h)?.log.warn(fields, msg);
        // Its queued work is cancelled on close, as at the connection's own watermark.
        h.terminate();
      }
    }
  }

  /**
   * Runs one request through the same router, batchers and ledger as the
   * WebSocket path; resolves with its one terminal reply (for the HTTP API).
   */
  submit: NodeContext['submit'] = () => Promise.reject(new Error('node is not started'));

  private startHttpEntry(gateway: Ref<never>, router: Ref<RouterMsg>, specs: ReadonlyMap<string, ModelSpec>): void {
    const pending = new Map<string, { resolve: (f: ResultFrame | ErrorFrame) => void; model: string; version: string }>();
    let seq = 0;
    const entry = spawnStateless(gateway, (msg: SessionMsg) => {
      if (msg.t !== 'reply') return;
      const p = pending.get(msg.key);
      if (!p) return void this.metrics.duplicates.inc();
      pending.delete(msg.key);
      this.outstanding--;
      const f = msg.frame;
      this.metrics.answered(p.model, p.version, f.t === 'result' ? 'ok' : f.code, f.t === 'result' ? f.timings.totalMs : undefined);
      p.resolve(f);
    }, 'http');
    this.sessions.set('http', entry);
    // The key's owner part (all but its sequence number, see ownerOf) is the caller's address: each
    // address gets its own share of a model's queue under pressure, not one for all HTTP callers.
    this.submit = (f, caller = {}) => new Promise((resolve) => {
      let req: InferRequest;
      try {
        req = admit(specs, f, `${this.nodeId}/${this.incarnation}/http/${addressKey(caller.address ?? '')}/${seq++}`, entry);
      } catch (e) {
        if (!ActorserveError.is(e)) throw e;
        this.metrics.answered(specs.get(f.model)?.name ?? '', specs.get(f.model)?.version ?? '', e.code);
        return resolve(errorFrame(f.id, e));
      }
      pending.set(req.key, { resolve, model: req.spec.name, version: req.spec.version });
      this.outstanding++;
      dispatch(router, { t: 'infer', req });
      // A caller that went away has its request cancelled if still queued (answered `cancelled`, as for
      // a WebSocket client that closes), so abandoned work does not take inference time under load.
      const key = req.key;
      caller.gone?.addEventListener('abort', () => void (pending.has(key) && dispatch(router, { t: 'cancel', model: f.model, key })), { once: true });
    });
  }

  private route(req: IncomingMessage, res: ServerResponse, path: string): boolean {
    if (req.method === 'GET' && path === '/metrics') {
      this.metrics.text().then(
        (text) => {
          res.writeHead(200, { 'content-type': this.metrics.contentType });
          res.end(text);
        },
        (e: Error) => json(res, 500, { error: e.message }),
      );
      return true;
    }
    if (req.method === 'GET' && path === '/v1/cluster') {
      json(res, 200, { node: this.nodeId, incarnation: this.incarnation, members: this.clusterView() });
      return true;
    }
    if (path.startsWith('/v1/admin/') && !this.adminAllowed(req)) {
      json(res, 401, { error: 'admin calls need the admin token (or, when the node has none, a caller on this machine)' });
      return true;
    }
    if (/^\/v2\/models\/[^/]+(\/versions\/[^/]+)?\/infer$/.test(path) && this.auth.clients && !this.auth.clients.has(bearer(req))) {
      res.setHeader('www-authenticate', 'Bearer');
      json(res, 401, { error: 'a client token is required' });
      return true;
    }
    if (req.method === 'POST' && path === '/v1/admin/chaos') {
      void this.chaosRoute(req, res);
      return true;
    }
    if (req.method === 'POST' && path === '/v1/admin/leave') {
      json(res, 202, { leaving: true });
      void this.leave();
      return true;
    }
    return false;
  }

  /**
   * Fault injection (only with `chaos: true`): crash, hang or exit a worker,
   * drop or delay peer messages, cut a link, kill the node.
   */
  get chaos(): ChaosTarget {
    if (!this.chaosEnabled) throw new Error('chaos is off: start the node with chaos: true (--chaos)');
    const membership = this.membership;
    return {
      workerFault: (model, worker, fault) => {
        const thread = this.models.get(model)?.workers[worker]?.thread();
        thread?.inject(fault);
        return thread !== undefined;
      },
      peerFaults: membership?.faults ?? { dropFraction: 0, delayMs: 0 },
      cutLink: (peer) => membership?.cutLink(peer) ?? false,
      heal: (peer) => membership?.heal(peer),
      kill: () => process.kill(process.pid, 'SIGKILL'),
    };
  }

  private chaosEnabled = false;

  private async chaosRoute(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Chaos needs both the flag and a configured admin token: loopback alone is not enough.
    if (!this.chaosEnabled || !this.auth.admin) return json(res, 404, { error: 'chaos is off on this node' });
    let body: unknown;
    try {
      body = JSON.parse((await readBody(req, 64 * 1024)).toString('utf8'));
    } catch (e) {
      return json(res, 400, { error: `bad chaos request: ${(e as Error).message}` });
    }
    if (!checkChaos.Check(body)) return json(res, 400, { error: 'bad chaos request: see ChaosRequest in src/chaos/Chaos.ts' });
    try {
      const done = applyChaos(this.chaos, body);
      this.log.warn({ chaos: body }, `chaos: ${done}`);
      json(res, 200, { ok: true, done });
    } catch (e) {
      json(res, 404, { error: (e as Error).message });
    }
  }

  /** The admin token when the node has one; otherwise only a caller on this machine. */
  private adminAllowed(req: IncomingMessage): boolean {
    if (this.auth.admin) return this.auth.admin.has(bearer(req));
    const remote = req.socket.remoteAddress ?? '';
    return remote === '127.0.0.1' || remote === '::1' || remote === '::ffff:127.0.0.1';
  }

  /** Every model has at least one started worker. */
  private async waitForModels(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (const m of this.models.values()) {
      for (;;) {
        const stats = await this.batcherStats(m.spec.name);
        const states = Object.values(stats.workers);
        if (states.some((s) => s === 'idle' || s === 'busy')) break;
        if (states.every((s) => s === 'stopped')) {
          // One broken model (a corrupt file) must not take the node's other models down with it.
          this.log.error({ model: m.spec.name }, 'model could not be loaded; not offering it');
          this.withdrawn.add(m.spec.name);
          break;
        }
        if (Date.now() > until) throw new Error(`model ${m.spec.name} did not load within ${timeoutMs} ms`);
        await sleep(20);
      }
    }
  }

  /** Joined once a peer link is open; the first node of a cluster gives up waiting and is up alone. */
  private async waitForPeers(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (Date.now() < until && !this.clusterView().some((m) => m.nodeId !== this.nodeId && m.linked)) await sleep(20);
  }

  batcherStats(model: string): Promise<BatcherStats> {
    const m = this.models.get(model);
    if (!m) return Promise.reject(new RangeError(`no model ${model}`));
    return query(m.batcher, (replyTo: Ref<BatcherStats>) => ({ t: 'stats' as const, replyTo }), 5_000) as Promise<BatcherStats>;
  }

  /**
   * Graceful leave: unready, tell the cluster, take no new clients or work,
   * finish what is queued here and what this node's clients wait for, then
   * stop. Work that peers send meanwhile is passed on.
   * @param drainTimeoutMs default 30 000 ms; past it the node stops anyway.
   */
  leave(drainTimeoutMs = 30_000): Promise<void> {
    this.leaving ??= (async () => {
      this.ready = false;
      this.log.info('leaving: draining');
      this.membership?.setSelfState('leaving');
      const until = Date.now() + drainTimeoutMs;
      const busy = () => [...this.localLoad.values()].some((n) => n > 0) || this.outstanding > 0;
      // Give the peers a heartbeat to learn we are leaving, then hand what is queued here to them.
      await sleep(300);
      for (const m of this.models.values()) dispatch(m.batcher, { t: 'drain' });
      while (busy() && Date.now() < until) await sleep(20);
      if (busy()) this.log.warn({ outstanding: this.outstanding }, 'drain timed out');
      this.log.info('left');
      await this.stop();
    })();
    return this.leaving;
  }

  /** Closes client connections (1001) and peer links, stops the actors and every inference thread. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.ready = false;
      clearInterval(this.clientSweep);
      clearInterval(this.clientPing);
      this.membership?.stop();
      await this.server?.close();
      for (const m of this.models.values()) m.supervision.close();
      await Promise.all([...this.models.values()].flatMap((m) => m.workers.map((w) => w.shutdown())));
      stop(this.system);
      this.resolveDone();
    })();
    return this.stopped;
  }
}

/** What a node keeps about a client connection (and its keepalive). */
interface ClientConnection extends Liveness {
  /** The logger that names it. */
  log: Logger;
  /** When client tokens are on, the digest of the token it authenticated with. */
  token?: Buffer;
}

/** Answers a client `unauthorized` (why, in the message) and closes it with 1008. */
function closeUnauthorized(ws: WebSocket, why: string): void {
  if (ws.readyState === ws.OPEN) ws.send(encode({ t: 'error', id: null, code: 'unauthorized', message: why } satisfies ErrorFrame));
  ws.close(CloseCode.policyViolation, 'unauthorized');
}

/**
 * A client that could not send a header (a browser) proves its token in its
 * first frame, within 5 s, against the client tokens of that moment; anything
 * else is answered `unauthorized` and closed.
 */
function awaitHello(ws: WebSocket, tokens: () => TokenSet | undefined, log: Logger, open: (token: Buffer) => void, onRefused: () => void): void {
  const refuse = (why: string) => {
    log.info({ reason: why }, 'client refused');
    onRefused();
    closeUnauthorized(ws, why);
  };
  const timer = setTimeout(() => refuse('no hello with a token within 5 s'), 5_000);
  ws.once('close', () => clearTimeout(timer));
  ws.once('message', (data: Buffer) => {
    clearTimeout(timer);
    let f: unknown;
    try {
      f = decodeUntrusted(data);
    } catch {
      return refuse('first frame is not msgpack');
    }
    if (!checkHello.Check(f)) return refuse('the first frame must be {t:"hello", token}');
    const digest = tokenDigest(f.token);
    if (!tokens()?.hasDigest(digest)) return refuse('unknown token');
    open(digest);
  });
}

/** Client frames received but not yet handled, per connection, at which reading pauses and resumes. */
const INBOUND_HIGH_WATER = 64;
const INBOUND_LOW_WATER = 16;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sum<T>(items: Iterable<T>, of: (x: T) => number): number {
  let total = 0;
  for (const x of items) total += of(x);
  return total;
}

function positive(what: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${what} must be a positive integer, got ${n}`);
  return n;
}
