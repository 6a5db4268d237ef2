/**
 * An in-process TCP fault proxy (node:net) that sits in front of one node's
 * port, so tests and the chaos suite can cut, slow or break the links to that
 * node without root, netem or Toxiproxy (see RELIABILITY.md, "Network faults
 * on this machine").
 *
 *   const proxy = new FaultProxy({ targetHost: '127.0.0.1', targetPort: nodePort });
 *   const port = await proxy.start();           // peers dial this port instead
 *   proxy.setMode({ kind: 'delay', ms: 50, jitterMs: 10 });
 *   proxy.setMode('blackhole');                 // silent partition
 *   proxy.setMode('pass');                      // heal
 *   await proxy.close();
 *
 * Every accepted connection gets its own upstream connection to the target,
 * and two directions: `toTarget` (client → target) and `toClient`
 * (target → client). Each direction has one FIFO queue and at most one timer,
 * so order is kept whatever the mode. A mode change applies at once to every
 * existing connection and to new ones:
 *
 * - `pass`: forward as fast as the sockets take it.
 * - `delay { ms, jitterMs }`: each chunk is forwarded ms ± jitterMs after it
 *   arrived (never earlier than the chunk before it, so order is kept).
 *   Connection setup is not delayed, only data.
 * - `bandwidth { bytesPerSec, burstBytes? }`: a token bucket per connection
 *   and direction (burst defaults to 50 ms worth of bytes).
 * - `slice { maxChunk }`: forward at most maxChunk bytes per write, one write
 *   per event-loop turn, with Nagle off, to exercise the peer's framing.
 * - `blackhole`: a silent partition. Connections are kept and new ones are
 *   accepted (their upstream connection is not opened: the SYN is lost), every
 *   byte either way is read and dropped, queued bytes are dropped too, and
 *   nobody sees an error. On leaving blackhole (heal), every connection that
 *   had bytes (or a FIN) dropped is reset on both sides: a dropped stretch of
 *   a TCP byte stream cannot be resumed without corrupting WebSocket framing,
 *   so this models a TCP connection that timed out during the partition.
 *   Connections that stayed idle during the partition survive (and those
 *   accepted during it open their upstream connection then).
 * - `reset`: a downed link. Every connection is reset at once on both sides
 *   with `socket.resetAndDestroy()` (peers see ECONNRESET immediately), and
 *   new connections are accepted and reset at once (they fail fast).
 *
 * Bounded: each direction pauses its source socket once `highWaterBytes` are
 * queued (TCP-like flow control, so a slow link backpressures the sender
 * instead of buffering without end) and resumes it below half of that. Note
 * that in delay mode this caps a connection's throughput at about
 * highWaterBytes per delay. If a direction's queue ever exceeds
 * `maxQueuedBytes` anyway, the connection is reset. Errors on either socket
 * (ECONNRESET, ECONNREFUSED from the target, …) reset the other side and never
 * throw. close() destroys every connection and clears every timer.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { Deque } from '../actors/Deque.js';

export type FaultMode =
  | { readonly kind: 'pass' }
  | { readonly kind: 'delay'; readonly ms: number; readonly jitterMs?: number }
  | { readonly kind: 'bandwidth'; readonly bytesPerSec: number; readonly burstBytes?: number }
  | { readonly kind: 'slice'; readonly maxChunk: number }
  | { readonly kind: 'blackhole' }
  | { readonly kind: 'reset' };

export type FaultModeKind = FaultMode['kind'];

/** The modes without parameters may be given by name. */
export type FaultModeInput = FaultMode | 'pass' | 'blackhole' | 'reset';

export interface FaultProxyOptions {
  /** Default '127.0.0.1'. */
  listenHost?: string;
  /** Default 0 (an ephemeral port; read it from `proxy.port` after start). */
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  /** Initial mode; default 'pass'. */
  mode?: FaultModeInput;
  /** Queued bytes per direction at which the source socket is paused. Default 4 MiB. */
  highWaterBytes?: number;
  /** Queued bytes per direction past which the connection is reset. Default 64 MiB. */
  maxQueuedBytes?: number;
  /** Random source in [0, 1) for delay jitter (pass a seeded one for replayable runs). Default Math.random. */
  random?: () => number;
}

export interface DirectionStats {
  /** Bytes written to the destination socket. */
  bytesForwarded: number;
  /** Bytes read from the source and never forwarded (blackhole, or queued when a connection died). */
  bytesDropped: number;
  /** Writes to the destination socket (in slice mode, one per slice). */
  writes: number;
  /** Bytes queued right now, over all connections. */
  bytesQueued: number;
}

export interface FaultProxyStats {
  /** Client → target. */
  toTarget: DirectionStats;
  /** Target → client. */
  toClient: DirectionStats;
  /** Connections accepted, including those reset at once in reset mode. */
  connectionsAccepted: number;
  /** Connections reset at accept because the mode was reset. */
  connectionsRefused: number;
  /** Established connections the proxy reset as a fault: reset mode, heal after blackhole, queue cap (not resets passed on from a peer's error). */
  connectionsReset: number;
  /** Connections open now. */
  connectionsOpen: number;
}

type DirectionName = 'toTarget' | 'toClient';

const MiB = 1024 * 1024;

/** Validates a mode and returns it as an object. Throws RangeError on bad parameters. */
export function normalizeFaultMode(input: FaultModeInput): FaultMode {
  const mode: FaultMode = typeof input === 'string' ? { kind: input } : input;
  switch (mode.kind) {
    case 'pass':
    case 'blackhole':
    case 'reset':
      return { kind: mode.kind };
    case 'delay': {
      const jitterMs = mode.jitterMs ?? 0;
      if (!Number.isFinite(mode.ms) || mode.ms < 0) throw new RangeError(`delay ms must be a finite number >= 0, got ${mode.ms}`);
      if (!Number.isFinite(jitterMs) || jitterMs < 0) throw new RangeError(`delay jitterMs must be a finite number >= 0, got ${jitterMs}`);
      return { kind: 'delay', ms: mode.ms, jitterMs };
    }
    case 'bandwidth': {
      if (!Number.isFinite(mode.bytesPerSec) || mode.bytesPerSec <= 0) throw new RangeError(`bandwidth bytesPerSec must be > 0, got ${mode.bytesPerSec}`);
      const burstBytes = mode.burstBytes ?? Math.max(1, Math.ceil(mode.bytesPerSec / 20));
      if (!Number.isFinite(burstBytes) || burstBytes < 1) throw new RangeError(`bandwidth burstBytes must be >= 1, got ${burstBytes}`);
      return { kind: 'bandwidth', bytesPerSec: mode.bytesPerSec, burstBytes: Math.floor(burstBytes) };
    }
    case 'slice':
      if (!Number.isInteger(mode.maxChunk) || mode.maxChunk < 1) throw new RangeError(`slice maxChunk must be an integer >= 1, got ${mode.maxChunk}`);
      return { kind: 'slice', maxChunk: mode.maxChunk };
    default:
      throw new RangeError(`unknown fault mode ${JSON.stringify((mode as { kind: unknown }).kind)}`);
  }
}

/**
 * Parses a mode spec: `pass`, `delay:MS[:JITTER]`, `bandwidth:BPS`, `blackhole`,
 * `reset`, `slice:N`. Throws RangeError on anything else.
 */
export function parseFaultMode(spec: string): FaultMode {
  const [kind, ...args] = spec.trim().split(':');
  const nums = args.map((a) => {
    const n = Number(a);
    if (a.trim() === '' || !Number.isFinite(n)) throw new RangeError(`bad number ${JSON.stringify(a)} in mode ${JSON.stringify(spec)}`);
    return n;
  });
  const arity = (min: number, max: number): void => {
    if (nums.length < min || nums.length > max) throw new RangeError(`mode ${JSON.stringify(spec)}: ${kind} takes ${min === max ? min : `${min} to ${max}`} parameter(s)`);
  };
  switch (kind) {
    case 'pass':
    case 'blackhole':
    case 'reset':
      arity(0, 0);
      return { kind };
    case 'delay':
      arity(1, 2);
      return normalizeFaultMode({ kind, ms: nums[0]!, jitterMs: nums[1] ?? 0 });
    case 'bandwidth':
      arity(1, 1);
      return normalizeFaultMode({ kind, bytesPerSec: nums[0]! });
    case 'slice':
      arity(1, 1);
      return normalizeFaultMode({ kind, maxChunk: nums[0]! });
    default:
      throw new RangeError(`unknown fault mode ${JSON.stringify(spec)} (pass | delay:MS[:JITTER] | bandwidth:BPS | blackhole | reset | slice:N)`);
  }
}

/** The spec string of a mode (the inverse of parseFaultMode). */
export function formatFaultMode(mode: FaultMode): string {
  switch (mode.kind) {
    case 'delay':
      return mode.jitterMs ? `delay:${mode.ms}:${mode.jitterMs}` : `delay:${mode.ms}`;
    case 'bandwidth':
      return `bandwidth:${mode.bytesPerSec}`;
    case 'slice':
      return `slice:${mode.maxChunk}`;
    default:
      return mode.kind;
  }
}

/** Resets a socket (RST) where it can; a socket still connecting or without a handle is just destroyed. */
function hardKill(socket: Socket | null): void {
  if (!socket || socket.destroyed) return;
  try {
    if (socket.connecting) socket.destroy();
    else socket.resetAndDestroy();
  } catch {
    socket.destroy();
  }
}

interface Chunk {
  buf: Buffer;
  /** performance.now() at which a delayed chunk may go. */
  dueAt: number;
}

/** One direction of one connection: FIFO queue, one timer, token bucket, end propagation. */
class Pipe {
  private readonly queue = new Deque<Chunk>();
  queued = 0;
  private timer: NodeJS.Timeout | null = null;
  /** Slice mode: set after each slice until the next event-loop turn (one slice per turn). */
  private immediate: NodeJS.Immediate | null = null;
  /** Waiting for 'drain' on the destination. */
  private blocked = false;
  private paused = false;
  private lastDue = 0;
  private tokens = 0;
  private refilledAt = 0;
  /** The source sent its FIN; end the destination once the queue is flushed. */
  endPending = false;
  /** We called end() on the destination. */
  endSent = false;

  constructor(
    private readonly link: Link,
    readonly name: DirectionName,
  ) {}

  private get proxy(): FaultProxy {
    return this.link.proxy;
  }

  private get source(): Socket | null {
    return this.name === 'toTarget' ? this.link.client : this.link.upstream;
  }

  /** Null until the destination can be written to. */
  private get dest(): Socket | null {
    if (this.name === 'toClient') return this.link.client;
    return this.link.upstreamReady ? this.link.upstream : null;
  }

  onDrain = (): void => {
    this.blocked = false;
    this.pump();
  };

  onData(buf: Buffer): void {
    const proxy = this.proxy;
    const mode = proxy.currentMode;
    if (mode.kind === 'blackhole' || mode.kind === 'reset') {
      proxy.countDropped(this.name, buf.length);
      this.link.tainted = true;
      return;
    }
    const now = performance.now();
    let dueAt = now;
    if (mode.kind === 'delay') {
      const jitter = mode.jitterMs ?? 0;
      dueAt = now + Math.max(0, mode.ms + (jitter > 0 ? (proxy.random() * 2 - 1) * jitter : 0));
    }
    dueAt = Math.max(dueAt, this.lastDue);
    this.lastDue = dueAt;
    this.queue.push({ buf, dueAt });
    this.queued += buf.length;
    if (this.queued > proxy.maxQueuedBytes) {
      this.link.kill('reset', true);
      return;
    }
    this.pump();
    if (!this.link.dead && this.queued >= proxy.highWaterBytes && !this.paused) {
      this.paused = true;
      this.source?.pause();
    }
  }

  onEnd(): void {
    if (this.proxy.currentMode.kind === 'blackhole') {
      // The FIN is lost in the partition like any other packet.
      this.link.tainted = true;
      return;
    }
    this.endPending = true;
    this.pump();
  }

  /** Refill the bucket to full (on entering bandwidth mode). */
  resetBucket(burst: number): void {
    this.tokens = burst;
    this.refilledAt = performance.now();
  }

  /** Forward what the current mode allows now; arm one timer for the rest. */
  pump(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (this.link.dead) return;
    const dest = this.dest;
    if (dest === null || this.blocked) return;
    if (dest.destroyed || this.endSent) {
      this.dropQueued();
      return;
    }
    const mode = this.proxy.currentMode;
    while (this.queue.length > 0) {
      const head = this.queue.peek()!;
      let n = head.buf.length;
      switch (mode.kind) {
        case 'pass':
          break;
        case 'delay': {
          const wait = head.dueAt - performance.now();
          if (wait > 0) {
            this.timer = setTimeout(() => this.pump(), Math.ceil(wait));
            return;
          }
          break;
        }
        case 'bandwidth': {
          const burst = mode.burstBytes ?? 1;
          const now = performance.now();
          this.tokens = Math.min(burst, this.tokens + ((now - this.refilledAt) / 1000) * mode.bytesPerSec);
          this.refilledAt = now;
          if (this.tokens < 1) {
            const want = Math.min(head.buf.length, burst);
            const wait = ((want - this.tokens) / mode.bytesPerSec) * 1000;
            this.timer = setTimeout(() => this.pump(), Math.max(1, Math.ceil(wait)));
            return;
          }
          n = Math.min(n, Math.floor(this.tokens));
          this.tokens -= n;
          break;
        }
        case 'slice':
          if (this.immediate) return; // a slice already went this turn
          n = Math.min(n, mode.maxChunk);
          break;
        case 'blackhole':
        case 'reset':
          // Queues are dropped on entering these modes; nothing to forward.
          this.dropQueued();
          return;
      }
      let out: Buffer;
      if (n >= head.buf.length) {
        this.queue.shift();
        out = head.buf;
      } else {
        out = head.buf.subarray(0, n);
        head.buf = head.buf.subarray(n);
      }
      this.queued -= out.length;
      const ok = dest.write(out);
      this.proxy.countForwarded(this.name, out.length);
      this.maybeResume();
      if (mode.kind === 'slice') {
        // One slice per event-loop turn (data arriving meanwhile waits too),
        // so a peer in this process reads them apart; across processes TCP
        // may still coalesce some.
        this.immediate = setImmediate(() => {
          this.immediate = null;
          this.pump();
        });
      }
      if (!ok) {
        this.blocked = true;
        return;
      }
      if (mode.kind === 'slice') return;
    }
    if (this.endPending && !this.endSent) {
      this.endSent = true;
      dest.end();
    }
  }

  private maybeResume(): void {
    if (this.paused && this.queued <= this.proxy.highWaterBytes / 2) {
      this.paused = false;
      this.source?.resume();
    }
  }

  /** Drop everything queued (counted as dropped); returns the byte count. */
  dropQueued(): number {
    const dropped = this.queued;
    while (this.queue.length > 0) this.queue.shift();
    this.queued = 0;
    if (dropped > 0) this.proxy.countDropped(this.name, dropped);
    this.maybeResume();
    return dropped;
  }

  cancelTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = null;
    this.immediate = null;
  }

  dispose(): void {
    this.cancelTimers();
    this.dropQueued();
  }
}

/** One accepted connection and its upstream connection. */
class Link {
  upstream: Socket | null = null;
  upstreamReady = false;
  /** Bytes or a FIN were dropped in blackhole mode: reset on heal. */
  tainted = false;
  dead = false;
  private clientEnded = false;
  private upstreamEnded = false;
  private clientClosed = false;
  private upstreamClosed = false;
  readonly toTarget = new Pipe(this, 'toTarget');
  readonly toClient = new Pipe(this, 'toClient');

  constructor(
    readonly proxy: FaultProxy,
    readonly client: Socket,
  ) {
    client.setNoDelay(true);
    client.on('error', () => {});
    client.on('data', (buf: Buffer) => this.toTarget.onData(buf));
    client.on('end', () => {
      this.clientEnded = true;
      this.toTarget.onEnd();
    });
    client.on('drain', this.toClient.onDrain);
    client.on('close', () => {
      this.clientClosed = true;
      this.onClose(this.clientEnded && this.toClient.endSent, this.upstreamClosed);
    });
  }

  connectUpstream(): void {
    if (this.upstream || this.dead) return;
    const up = connect({ host: this.proxy.targetHost, port: this.proxy.targetPort, allowHalfOpen: true });
    this.upstream = up;
    up.setNoDelay(true);
    up.on('error', () => {});
    up.on('connect', () => {
      this.upstreamReady = true;
      this.toTarget.pump();
    });
    up.on('data', (buf: Buffer) => this.toClient.onData(buf));
    up.on('end', () => {
      this.upstreamEnded = true;
      this.toClient.onEnd();
    });
    up.on('drain', this.toTarget.onDrain);
    up.on('close', () => {
      this.upstreamClosed = true;
      this.onClose(this.upstreamEnded && this.toTarget.endSent, this.clientClosed);
    });
  }

  /**
   * A socket closed. Graceful (its FIN came and ours went) lets the other side
   * finish flushing; anything else (error, RST, destroy) resets the other side.
   */
  private onClose(graceful: boolean, otherClosed: boolean): void {
    if (this.dead) return;
    if (!graceful) {
      this.kill('reset', false);
    } else if (otherClosed) {
      this.dead = true;
      this.toTarget.dispose();
      this.toClient.dispose();
      this.proxy.forget(this);
    }
  }

  /**
   * Tear down both sides with an RST ('reset') or a plain destroy. `fault`
   * counts it in stats().connectionsReset (a reset the proxy chose, not one
   * passed on from a peer). Idempotent.
   */
  kill(how: 'reset' | 'destroy', fault: boolean): void {
    if (this.dead) return;
    this.dead = true;
    this.toTarget.dispose();
    this.toClient.dispose();
    if (fault) this.proxy.countReset();
    if (how === 'reset') {
      hardKill(this.client);
      hardKill(this.upstream);
    } else {
      this.client.destroy();
      this.upstream?.destroy();
    }
    this.proxy.forget(this);
  }

  pipes(): [Pipe, Pipe] {
    return [this.toTarget, this.toClient];
  }
}

function emptyDirection(): Omit<DirectionStats, 'bytesQueued'> {
  return { bytesForwarded: 0, bytesDropped: 0, writes: 0 };
}

export class FaultProxy {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
  readonly highWaterBytes: number;
  readonly maxQueuedBytes: number;
  readonly random: () => number;
  private modeNow: FaultMode;
  private server: Server | null = null;
  private readonly links = new Set<Link>();
  private closing: Promise<void> | null = null;
  private boundPort = 0;
  private readonly counts = {
    toTarget: emptyDirection(),
    toClient: emptyDirection(),
    connectionsAccepted: 0,
    connectionsRefused: 0,
    connectionsReset: 0,
  };

  constructor(options: FaultProxyOptions) {
    this.listenHost = options.listenHost ?? '127.0.0.1';
    this.listenPort = options.listenPort ?? 0;
    this.targetHost = options.targetHost;
    this.targetPort = options.targetPort;
    this.highWaterBytes = options.highWaterBytes ?? 4 * MiB;
    this.maxQueuedBytes = options.maxQueuedBytes ?? 64 * MiB;
    this.random = options.random ?? Math.random;
    if (!Number.isInteger(this.targetPort) || this.targetPort < 1 || this.targetPort > 65535) throw new RangeError(`targetPort must be 1..65535, got ${this.targetPort}`);
    if (!Number.isInteger(this.listenPort) || this.listenPort < 0 || this.listenPort > 65535) throw new RangeError(`listenPort must be 0..65535, got ${this.listenPort}`);
    if (!(this.highWaterBytes >= 1)) throw new RangeError(`highWaterBytes must be >= 1, got ${this.highWaterBytes}`);
    if (!(this.maxQueuedBytes >= 1)) throw new RangeError(`maxQueuedBytes must be >= 1, got ${this.maxQueuedBytes}`);
    this.modeNow = normalizeFaultMode(options.mode ?? 'pass');
  }

  /** The port the proxy listens on (valid after start()). */
  get port(): number {
    return this.boundPort;
  }

  get mode(): FaultMode {
    return this.modeNow;
  }

  /** @internal the mode pipes consult. */
  get currentMode(): FaultMode {
    return this.modeNow;
  }

  /** Whether the listening server is open. */
  get listening(): boolean {
    return this.server?.listening ?? false;
  }

  /** Connections open now. */
  get connections(): number {
    return this.links.size;
  }

  /** Starts listening; resolves with the bound port. */
  async start(): Promise<number> {
    if (this.server) throw new Error('FaultProxy already started');
    if (this.closing) throw new Error('FaultProxy is closed');
    const server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => reject(err);
      server.once('error', onError);
      server.listen(this.listenPort, this.listenHost, () => {
        server.off('error', onError);
        resolve();
      });
    });
    // Past listen, a server error (EMFILE on accept, …) must not crash the process.
    server.on('error', () => {});
    this.boundPort = (server.address() as AddressInfo).port;
    return this.boundPort;
  }

  /** Switches the mode for existing and new connections; returns the previous mode. */
  setMode(input: FaultModeInput): FaultMode {
    const next = normalizeFaultMode(input);
    const prev = this.modeNow;
    this.modeNow = next;
    const links = [...this.links];
    if (next.kind === 'reset') {
      for (const link of links) link.kill('reset', true);
      return prev;
    }
    if (next.kind === 'blackhole') {
      for (const link of links) {
        for (const pipe of link.pipes()) {
          pipe.cancelTimers();
          if (pipe.dropQueued() > 0) link.tainted = true;
        }
      }
      return prev;
    }
    if (prev.kind === 'blackhole') {
      // Heal: connections that lost bytes in the partition "timed out".
      for (const link of links) {
        if (link.tainted) link.kill('reset', true);
        else link.connectUpstream();
      }
    }
    for (const link of this.links) {
      for (const pipe of link.pipes()) {
        if (next.kind === 'bandwidth') pipe.resetBucket(next.burstBytes ?? 1);
        pipe.pump();
      }
    }
    return prev;
  }

  stats(): FaultProxyStats {
    let qTarget = 0;
    let qClient = 0;
    for (const link of this.links) {
      qTarget += link.toTarget.queued;
      qClient += link.toClient.queued;
    }
    return {
      toTarget: { ...this.counts.toTarget, bytesQueued: qTarget },
      toClient: { ...this.counts.toClient, bytesQueued: qClient },
      connectionsAccepted: this.counts.connectionsAccepted,
      connectionsRefused: this.counts.connectionsRefused,
      connectionsReset: this.counts.connectionsReset,
      connectionsOpen: this.links.size,
    };
  }

  /** Closes the server and destroys every connection; clears every timer. Idempotent. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const server = this.server;
    for (const link of [...this.links]) link.kill('destroy', false);
    this.closing = server
      ? new Promise<void>((resolve) => {
          if (!server.listening) return resolve();
          server.close(() => resolve());
        })
      : Promise.resolve();
    return this.closing;
  }

  private accept(socket: Socket): void {
    this.counts.connectionsAccepted++;
    socket.on('error', () => {});
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.modeNow.kind === 'reset') {
      this.counts.connectionsRefused++;
      hardKill(socket);
      return;
    }
    const link = new Link(this, socket);
    this.links.add(link);
    // In a partition the SYN is lost: the upstream connection opens on heal.
    if (this.modeNow.kind !== 'blackhole') link.connectUpstream();
  }

  /** @internal */
  forget(link: Link): void {
    this.links.delete(link);
  }

  /** @internal */
  countForwarded(dir: DirectionName, bytes: number): void {
    this.counts[dir].bytesForwarded += bytes;
    this.counts[dir].writes++;
  }

  /** @internal */
  countDropped(dir: DirectionName, bytes: number): void {
    this.counts[dir].bytesDropped += bytes;
  }

  /** @internal */
  countReset(): void {
    this.counts.connectionsReset++;
  }
}
