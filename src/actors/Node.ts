/**
 * One actorserve node: an actor system with the models supervisor (a
 * ModelSupervisor per model), the router and the gateway (a Session per
 * client connection), behind one HTTP/WebSocket port.
 */
import { dispatch, query, spawnStateless, start, stop, type Ref } from 'nact';
import { randomUUID } from 'node:crypto';
import { CloseCode } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { modelInfo, type ModelSpec } from '../models/registry.js';
import type { ThreadFaults } from '../models/threadProtocol.js';
import { encode } from '../transport/codec.js';
import { PROTOCOL_VERSION, type WelcomeFrame } from '../transport/protocol.js';
import { startServer, type RunningServer } from '../transport/Server.js';
import type { BatcherStats } from './messages.js';
import { spawnModelSupervisor, type ModelHandle } from './ModelSupervisor.js';
import { checkRestartPolicy, defaultRestartPolicy, type RestartPolicy } from './RestartIntensity.js';
import { spawnRouter } from './Router.js';
import { spawnSession } from './Session.js';

export interface NodeOptions {
  nodeId: string;
  models: ModelSpec[];
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Requests one connection may have unanswered. Default 1024. */
  maxInFlight?: number;
  /** Largest client frame; bigger closes the connection with 1009. Default 8 MiB. */
  maxFrameBytes?: number;
  /** Worker restart intensity and backoff. Default 5 restarts in 10 s, 10 ms doubling to 2 s. */
  restart?: RestartPolicy;
  /** A batch running longer than this counts as a hung worker. Default 30 000 ms. */
  runTimeoutMs?: number;
  /** Fault injection in the inference threads (tests and --chaos only). */
  faults?: ThreadFaults;
  /** How long start() waits for the models to load. Default 60 000 ms. */
  loadTimeoutMs?: number;
  log?: Logger;
}

export class ActorserveNode {
  readonly nodeId: string;
  readonly incarnation = randomUUID();
  readonly log: Logger;
  /** Late replies dropped by the origin's outstanding table. */
  duplicatesDropped = 0;

  private constructor(
    nodeId: string,
    log: Logger,
    private readonly system: Ref<never>,
    readonly models: Map<string, ModelHandle>,
    private server: RunningServer | undefined,
    private ready = false,
  ) {
    this.nodeId = nodeId;
    this.log = log;
  }

  get port(): number {
    if (!this.server) throw new Error('node is not listening');
    return this.server.port;
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/stream`;
  }

  isReady(): boolean {
    return this.ready;
  }

  /**
   * Starts the actor tree, loads every model and listens.
   * @throws RangeError for bad options; Error when a model cannot be loaded or the port bound.
   */
  static async start(opts: NodeOptions): Promise<ActorserveNode> {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(opts.nodeId)) throw new RangeError(`node id must match [A-Za-z0-9._-]{1,64}, got ${JSON.stringify(opts.nodeId)}`);
    if (opts.models.length === 0) throw new RangeError('a node needs at least one model');
    const maxInFlight = positive('maxInFlight', opts.maxInFlight ?? 1024);
    const maxFrameBytes = positive('maxFrameBytes', opts.maxFrameBytes ?? 8 * 1024 * 1024);
    const restart = checkRestartPolicy(opts.restart ?? defaultRestartPolicy);
    const runTimeoutMs = positive('runTimeoutMs', opts.runTimeoutMs ?? 30_000);
    const log = (opts.log ?? createLogger({ node: opts.nodeId })).child({ node: opts.nodeId });

    const system = start() as Ref<never>;
    const modelsSup = spawnStateless(system, () => undefined, 'models');
    const models = new Map<string, ModelHandle>();
    for (const spec of opts.models) {
      models.set(spec.name, spawnModelSupervisor(modelsSup, {
        spec,
        nodeId: opts.nodeId,
        policy: restart,
        runTimeoutMs,
        ...(opts.faults ? { faults: opts.faults } : {}),
        log,
      }));
    }
    const router = spawnRouter(system, new Map([...models].map(([k, v]) => [k, v.batcher])));
    const gateway = spawnStateless(system, () => undefined, 'gateway');
    const specs = new Map(opts.models.map((m) => [m.name, m]));
    const node = new ActorserveNode(opts.nodeId, log, system, models, undefined);

    const welcome = encode({
      t: 'welcome',
      protocol: PROTOCOL_VERSION,
      node: opts.nodeId,
      models: opts.models.map(modelInfo),
      limits: { maxInFlight, maxFrameBytes },
    } satisfies WelcomeFrame);

    const ticker = setInterval(() => {
      for (const m of models.values()) dispatch(m.batcher, { t: 'tick' });
    }, 10);
    ticker.unref();
    node.stopTicker = () => clearInterval(ticker);

    let sessions = 0;
    try {
      node.server = await startServer({
        host: opts.host ?? '127.0.0.1',
        port: opts.port ?? 8080,
        maxFrameBytes,
        isReady: () => node.ready,
        onClient: (ws, req) => {
          const name = `session-${sessions++}`;
          const slog = log.child({ session: name });
          slog.debug({ remote: req.socket.remoteAddress }, 'client connected');
          const session = spawnSession(gateway, {
            name, ws, models: specs, router, maxInFlight, log: slog,
            onDuplicate: () => void node.duplicatesDropped++,
          });
          ws.on('message', (data: Buffer, isBinary) => {
            if (!isBinary) return ws.close(CloseCode.unsupportedData, 'frames must be binary msgpack');
            dispatch(session, { t: 'frame', data });
          });
          ws.on('close', (code) => {
            slog.debug({ code }, 'client disconnected');
            dispatch(session, { t: 'closed' });
          });
          ws.on('error', (e) => slog.info({ err: e.message }, 'client socket error'));
          ws.send(welcome);
        },
      });
      await node.waitForModels(opts.loadTimeoutMs ?? 60_000);
    } catch (e) {
      await node.stop();
      throw e;
    }
    node.ready = true;
    log.info({ port: node.port, models: opts.models.map((m) => m.name), incarnation: node.incarnation }, 'listening');
    return node;
  }

  private stopTicker: () => void = () => undefined;

  /** Every model has at least one started worker. */
  private async waitForModels(timeoutMs: number): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (const m of this.models.values()) {
      for (;;) {
        const stats = await this.batcherStats(m.spec.name);
        const states = Object.values(stats.workers);
        if (states.some((s) => s === 'idle' || s === 'busy')) break;
        if (states.every((s) => s === 'stopped')) throw new Error(`model ${m.spec.name} could not be loaded (workers gave up)`);
        if (Date.now() > until) throw new Error(`model ${m.spec.name} did not load within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  batcherStats(model: string): Promise<BatcherStats> {
    const m = this.models.get(model);
    if (!m) return Promise.reject(new RangeError(`no model ${model}`));
    return query(m.batcher, (replyTo: Ref<BatcherStats>) => ({ t: 'stats' as const, replyTo }), 5_000) as Promise<BatcherStats>;
  }

  /** Closes client connections (1001), stops the actors and every inference thread. */
  async stop(): Promise<void> {
    this.ready = false;
    this.stopTicker();
    await this.server?.close();
    await Promise.all([...this.models.values()].flatMap((m) => m.workers.map((w) => w.shutdown())));
    stop(this.system);
  }
}


function positive(what: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${what} must be a positive integer, got ${n}`);
  return n;
}
