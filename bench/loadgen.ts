/**
 * Load generator: one child process (forked by the bench with an IPC
 * channel) that drives actorserve over WebSocket or the plain server over
 * HTTP/1.1 keep-alive, closed or open loop, and records latency in an HDR
 * histogram. Kept cheap: the request bytes are built and masked once and
 * only the id is patched per request, written to the socket whole
 * (WebSocket, maskedFrames.ts); HTTP requests are one prebuilt buffer
 * and responses are parsed only as far as status and length.
 *
 * With a priority mix (open loop), one frame per priority is prebuilt and
 * each priority gets its own latency histogram; `overloaded` answers get one
 * too, timed like results from the scheduled send (or the actual send, when
 * that was earlier: {@link SEND_AHEAD_MS}).
 *
 * Bounded: at most `rate × (warm-up + duration)` requests in open loop, no
 * sends after the measured window, a drain of at most `drainTimeoutMs`, and a
 * hard exit if the run overstays its whole budget or the bench goes away.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import WebSocket, { type RawData } from 'ws';
import { applyHeapGrowth, DEFAULT_HEAP_GROWTH_PERCENT } from '../src/heapGrowth.js';
import { decodeUntrusted, encode } from '../src/transport/codec.js';
import { PRIORITIES, type Priority, type WelcomeFrame } from '../src/transport/protocol.js';
import { encodeHistogram, newHistogram, recordMs } from './histogram.js';
import type { FromGenerator, GeneratorReport, LoadSpec, ToGenerator } from './loadSpec.js';
import { MaskedFramePool } from './maskedFrames.js';
import { jsonBody, sampleInput } from './payload.js';
import { priorityPicker } from './priorityMix.js';

const MAX_REQUESTS = 20_000_000;
const MAX_BUCKETS = 3_600;
/** Past this much unsent data on a WebSocket the generator stops queueing more (counted as `client_backlog`). */
const MAX_WS_BUFFERED = 64 * 1024 * 1024;
/** The same for unsent HTTP bytes (a text-orientation image is ~0.5 MB of JSON). */
const MAX_HTTP_BUFFERED = 64 * 1024 * 1024;
const CONNECT_TIMEOUT_MS = 10_000;
/** Distinct `overloaded` messages (numbers replaced by N) counted one by one; the rest go under "(other)". */
const MAX_REASONS = 16;

/**
 * Open loop: at each timer tick, requests due before the next tick leave too. Node's timers fire on whole
 * milliseconds, so a request due between two ticks waited for the next: at ~2,000 req/s that put ~0.7 ms
 * (p50) of this process's own timer into every measured latency, refusals and floors alike. A request sent
 * ahead of its schedule is timed from when it left; one that leaves late (the generator waited for a core,
 * or for the server to read) is still timed from its schedule.
 */
const SEND_AHEAD_MS = 1;
const now = (): number => performance.timeOrigin + performance.now();

function post(msg: FromGenerator): void {
  process.send?.(msg);
}

/** A FIFO of numbers (request ids answered in order on an HTTP connection). */
class Fifo {
  private items: number[] = [];
  private head = 0;
  get size(): number {
    return this.items.length - this.head;
  }
  push(x: number): void {
    this.items.push(x);
  }
  shift(): number | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head++]!;
    if (this.head > 4096 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }
}

/** One connection to the system under test. */
interface Conn {
  /** The node the connection is attached to (actorserve's welcome), for counting forwarded requests. */
  readonly entryNode: string | undefined;
  /** Sends request `id` with the frame of `lane` (an index into the prebuilt frames; HTTP has one); false when the generator could not queue it. */
  send(id: number, lane: number): boolean;
  /** Bytes queued on this connection and not yet taken by the kernel. */
  buffered(): number;
  close(): void;
}

interface Answer {
  ok: boolean;
  code: string;
  node: string | undefined;
  batchSize: number;
  /** An error's `retryAfterMs` when it is a non-negative number. */
  retryAfterMs: number | undefined;
  /** An error's message. */
  message: string | undefined;
  /** A result's `timings.totalMs`: the server's own time from receiving the request to its result. */
  serverMs: number | undefined;
}

type OnAnswer = (id: number, a: Answer, conn: Conn) => void;
type OnBroken = (why: string) => void;

// ---------------------------------------------------------------- WebSocket (actorserve)

const ID_SLOT = 0xfffffffe;
/** `"id"` followed by uint32 0xfffffffe, as msgpackr encodes the placeholder id. */
const ID_MARKER = Buffer.from([0xa2, 0x69, 0x64, 0xce, 0xff, 0xff, 0xff, 0xfe]);

interface WsTemplate {
  frame: Buffer;
  idPos: number;
}

/** The request frame with a placeholder id; `priority` left out sends none. */
function wsTemplate(spec: LoadSpec, priority?: Priority): WsTemplate {
  const data = sampleInput(spec.input.model, spec.input.rowShape, 1);
  const frame = encode({
    t: 'infer',
    id: ID_SLOT,
    model: spec.input.model,
    inputs: {
      [spec.input.inputName]: {
        dtype: 'float32',
        shape: [1, ...spec.input.rowShape],
        data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      },
    },
    ...(priority !== undefined ? { priority } : {}),
  });
  const at = frame.indexOf(ID_MARKER);
  if (at < 0) throw new Error('cannot find the id slot in the encoded frame');
  return { frame, idPos: at + 4 };
}

/** `pools`: prebuilt masked frames per lane, written to the socket whole (bench/maskedFrames.ts), shared by every connection. */
async function openWs(url: string, pools: readonly MaskedFramePool[], onAnswer: OnAnswer, onBroken: OnBroken): Promise<Conn> {
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });
  const welcome = await new Promise<WelcomeFrame>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no welcome from ${url} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    ws.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    ws.once('message', (data: RawData) => {
      clearTimeout(timer);
      resolve(decodeUntrusted(data as Buffer) as WelcomeFrame);
    });
  });
  let closing = false;
  const socket = (ws as unknown as { _socket: Socket })._socket;
  const conn: Conn = {
    entryNode: welcome.node,
    send(id, lane) {
      if (ws.readyState !== WebSocket.OPEN || ws.bufferedAmount > MAX_WS_BUFFERED) return false;
      pools[lane]!.send(socket, id);
      return true;
    },
    buffered: () => ws.bufferedAmount,
    close() {
      closing = true;
      ws.terminate();
    },
  };
  ws.on('error', () => undefined);
  ws.on('close', (code) => {
    if (!closing) onBroken(`connection to ${url} closed (${code})`);
  });
  ws.on('message', (raw: RawData) => {
    const f = decodeUntrusted(raw as Buffer) as {
      t: string; id: unknown; code?: string; message?: unknown; node?: string; batchSize?: number; retryAfterMs?: unknown; timings?: { totalMs?: unknown };
    };
    if (typeof f.id !== 'number') return;
    if (f.t === 'result') {
      const serverMs = typeof f.timings?.totalMs === 'number' ? f.timings.totalMs : undefined;
      onAnswer(f.id, { ok: true, code: 'ok', node: f.node, batchSize: f.batchSize ?? 0, retryAfterMs: undefined, message: undefined, serverMs }, conn);
    } else {
      const retry = typeof f.retryAfterMs === 'number' && f.retryAfterMs >= 0 ? f.retryAfterMs : undefined;
      const message = typeof f.message === 'string' ? f.message : undefined;
      onAnswer(f.id, { ok: false, code: f.code ?? 'unknown', node: undefined, batchSize: 0, retryAfterMs: retry, message, serverMs: undefined }, conn);
    }
  });
  return conn;
}

// ---------------------------------------------------------------- HTTP/1.1 keep-alive (the plain server)

function httpRequestBytes(spec: LoadSpec, host: string, port: number): Buffer {
  const body = Buffer.from(jsonBody(spec.input));
  const head =
    `POST /infer/${encodeURIComponent(spec.input.model)} HTTP/1.1\r\nhost: ${host}:${port}\r\n` +
    `content-type: application/json\r\ncontent-length: ${body.length}\r\nconnection: keep-alive\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), body]);
}

const HEADER_END = Buffer.from('\r\n\r\n');

async function openHttp(host: string, port: number, request: Buffer, onAnswer: OnAnswer, onBroken: OnBroken): Promise<Conn> {
  const socket: Socket = netConnect({ host, port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`cannot connect to ${host}:${port} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
  const waiting = new Fifo();
  let pending: Buffer | undefined;
  let closing = false;
  const conn: Conn = {
    entryNode: undefined,
    send(id) {
      if (socket.destroyed || socket.writableLength > MAX_HTTP_BUFFERED) return false;
      waiting.push(id);
      socket.write(request);
      return true;
    },
    buffered: () => socket.writableLength,
    close() {
      closing = true;
      socket.destroy();
    },
  };
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (!closing) onBroken(`HTTP connection to ${host}:${port} closed`);
  });
  socket.on('data', (chunk: Buffer) => {
    let buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
    for (;;) {
      const he = buf.indexOf(HEADER_END);
      if (he < 0) break;
      const head = buf.toString('latin1', 0, he).toLowerCase();
      const len = Number(/content-length:\s*(\d+)/.exec(head)?.[1] ?? 0);
      const total = he + 4 + len;
      if (buf.length < total) break;
      const status = Number(head.slice(9, 12));
      const id = waiting.shift();
      buf = buf.subarray(total);
      if (id !== undefined) {
        onAnswer(
          id,
          status === 200
            ? { ok: true, code: 'ok', node: 'plain', batchSize: 1, retryAfterMs: undefined, message: undefined, serverMs: undefined }
            : { ok: false, code: `http_${status}`, node: undefined, batchSize: 0, retryAfterMs: undefined, message: undefined, serverMs: undefined },
          conn,
        );
      }
    }
    pending = buf.length > 0 ? buf : undefined;
  });
  return conn;
}

// ---------------------------------------------------------------- priorities

/** What one lane collects over the measured window. */
interface LaneStats {
  ok: number;
  okInWindow: number;
  errors: Record<string, number>;
  unanswered: number;
  hist: ReturnType<typeof newHistogram>;
  /** The server's own `timings.totalMs` of the same results. */
  serverHist: ReturnType<typeof newHistogram>;
}

// ---------------------------------------------------------------- the run

async function run(spec: LoadSpec, started: Promise<number>, stopped: Promise<void>): Promise<GeneratorReport> {
  const hist = newHistogram();
  const sentAt = new Map<number, number>();
  const errors: Record<string, number> = {};
  const perNode: Record<string, number> = {};
  const seen = new Set<string>();
  const tlOk: number[] = [];
  const tlErr: number[] = [];
  let sent = 0;
  let ok = 0;
  let okInWindow = 0;
  let okFromWindowStart = 0;
  let forwarded = 0;
  let batchSizeSum = 0;
  let nextId = 1;
  let startAt = 0;
  let measureFrom = Number.POSITIVE_INFINITY;
  let measureTo = Number.POSITIVE_INFINITY;
  let sending = true;
  let broken: string | undefined;
  let wake: (() => void) | undefined;
  const bump = (arr: number[], at: number) => {
    const b = Math.floor((at - startAt) / 1000);
    if (b < 0 || b >= MAX_BUCKETS) return;
    while (arr.length <= b) arr.push(0);
    arr[b]!++;
  };
  const countError = (code: string) => (errors[code] = (errors[code] ?? 0) + 1);
  // Priorities: only with a mix, so a phase without one pays nothing for them.
  const mix = spec.mode.kind === 'open' ? spec.mode.mix : undefined;
  const laneOf = new Map<number, number>();
  const lanes: LaneStats[] | undefined = mix === undefined ? undefined : PRIORITIES.map(() => ({ ok: 0, okInWindow: 0, errors: {}, unanswered: 0, hist: newHistogram(), serverHist: newHistogram() }));
  const overloadedHist = newHistogram();
  const lateHist = newHistogram();
  const retry = { count: 0, sum: 0, min: Number.POSITIVE_INFINITY, max: 0 };
  let overloadedCount = 0;
  let missingRetryAfter = 0;
  let sendBufferMax = 0;
  const reasons: Record<string, number> = {};
  const laneError = (lane: LaneStats | undefined, code: string) => {
    if (lane !== undefined) lane.errors[code] = (lane.errors[code] ?? 0) + 1;
  };

  let sendOn: (conn: Conn) => void = () => undefined;
  const onAnswer: OnAnswer = (id, a, conn) => {
    const t0 = sentAt.get(id);
    if (t0 === undefined) return;
    sentAt.delete(id);
    let lane: LaneStats | undefined;
    if (lanes !== undefined) {
      lane = lanes[laneOf.get(id) ?? 0];
      laneOf.delete(id);
    }
    const t = now();
    bump(a.ok ? tlOk : tlErr, t);
    if (a.ok && a.node !== undefined && !seen.has(a.node)) {
      seen.add(a.node);
      post({ t: 'node', node: a.node, at: t });
    }
    if (a.ok && t >= measureFrom) {
      okFromWindowStart++;
      if (t < measureTo) {
        okInWindow++;
        if (lane !== undefined) lane.okInWindow++;
      }
    }
    if (t0 >= measureFrom && t0 < measureTo) {
      if (a.ok) {
        ok++;
        recordMs(hist, t - t0);
        if (lane !== undefined) {
          lane.ok++;
          recordMs(lane.hist, t - t0);
          if (a.serverMs !== undefined) recordMs(lane.serverHist, a.serverMs);
        }
        batchSizeSum += a.batchSize;
        if (a.node !== undefined) {
          perNode[a.node] = (perNode[a.node] ?? 0) + 1;
          if (conn.entryNode !== undefined && a.node !== conn.entryNode) forwarded++;
        }
      } else {
        countError(a.code);
        laneError(lane, a.code);
        if (lanes !== undefined && a.code === 'overloaded') {
          overloadedCount++;
          recordMs(overloadedHist, t - t0);
          // Numbers in a message (a queue length, a wait) would make every answer its own reason.
          const reason = a.message === undefined ? '(no message)' : a.message.replace(/\d+(?:\.\d+)?/g, 'N');
          const key = reason in reasons || Object.keys(reasons).length < MAX_REASONS ? reason : '(other)';
          reasons[key] = (reasons[key] ?? 0) + 1;
          if (a.retryAfterMs === undefined) missingRetryAfter++;
          else {
            retry.count++;
            retry.sum += a.retryAfterMs;
            retry.min = Math.min(retry.min, a.retryAfterMs);
            retry.max = Math.max(retry.max, a.retryAfterMs);
          }
        }
      }
    }
    if (sending && spec.mode.kind === 'closed') sendOn(conn);
    if (sentAt.size === 0) wake?.();
  };
  const onBroken: OnBroken = (why) => {
    broken ??= why;
    wake?.();
  };

  const conns: Conn[] = [];
  const target = spec.target;
  if (target.kind === 'ws') {
    const templates = mix === undefined ? [wsTemplate(spec)] : PRIORITIES.map((p) => wsTemplate(spec, p));
    // A frame goes back to its pool once its own socket has taken it, so one pool per lane serves every connection.
    const pools = templates.map((t) => new MaskedFramePool(t.frame, t.idPos));
    for (let i = 0; i < spec.connections; i++) conns.push(await openWs(target.urls[i % target.urls.length]!, pools, onAnswer, onBroken));
  } else {
    const request = httpRequestBytes(spec, target.host, target.port);
    const n = spec.mode.kind === 'closed' ? spec.mode.concurrency : spec.connections;
    for (let i = 0; i < n; i++) conns.push(await openHttp(target.host, target.port, request, onAnswer, onBroken));
  }

  /** Sends one request scheduled at `at` (now, in closed loop) with the frame of `lane`. */
  const sendAt = (conn: Conn, at: number, lane = 0): void => {
    if (sent >= MAX_REQUESTS) return;
    const id = nextId++;
    // Timed from its schedule, or from when it left if that was earlier (SEND_AHEAD_MS); that time also places it in the window.
    const sendingAt = now();
    const t0 = Math.min(at, sendingAt);
    const measured = t0 >= measureFrom && t0 < measureTo;
    if (measured) recordMs(lateHist, sendingAt - t0);
    sentAt.set(id, t0);
    if (lanes !== undefined) laneOf.set(id, lane);
    sent++;
    const queued = conn.send(id, lane);
    if (lanes !== undefined) sendBufferMax = Math.max(sendBufferMax, conn.buffered());
    if (!queued) {
      sentAt.delete(id);
      laneOf.delete(id);
      if (measured) {
        countError('client_backlog');
        laneError(lanes?.[lane], 'client_backlog');
      }
    }
  };
  sendOn = (conn) => sendAt(conn, now());

  post({ t: 'ready' });
  startAt = await started;
  const loop = monitorEventLoopDelay({ resolution: 2 });
  let cpuFrom = process.cpuUsage();
  let cpuUsed: NodeJS.CpuUsage | undefined;
  measureFrom = startAt + spec.warmupS * 1000;
  const plannedTo = measureFrom + spec.durationS * 1000;
  const endWindow = () => {
    if (!sending) return;
    sending = false;
    const t = now();
    measureTo = Math.max(measureFrom, Math.min(plannedTo, t));
    cpuUsed = t >= measureFrom ? process.cpuUsage(cpuFrom) : { user: 0, system: 0 };
    loop.disable();
    wake?.();
  };
  void stopped.then(endWindow);
  const delay = Math.max(0, startAt - now());
  await new Promise((r) => setTimeout(r, delay));
  const windowStart = setTimeout(() => {
    cpuFrom = process.cpuUsage();
    loop.enable();
  }, Math.max(0, measureFrom - now()));
  const windowEnd = setTimeout(endWindow, Math.max(0, plannedTo - now()));
  measureTo = plannedTo;

  if (spec.mode.kind === 'closed') {
    const c = spec.mode.concurrency;
    if (target.kind === 'ws') {
      // Spread the window over the connections (each answer refills its own connection).
      for (let i = 0; i < c; i++) sendOn(conns[i % conns.length]!);
    } else {
      for (const conn of conns) sendOn(conn);
    }
    while (sending && broken === undefined) await new Promise<void>((r) => (wake = r));
  } else {
    const rate = spec.mode.rate;
    const total = Math.min(MAX_REQUESTS, Math.floor(rate * (spec.warmupS + spec.durationS)));
    const first = startAt + spec.scheduleOffsetMs;
    const due = (k: number) => first + (k * 1000) / rate;
    const nextLane = mix === undefined ? () => 0 : priorityPicker(mix);
    let i = 0;
    while (sending && broken === undefined && i < total) {
      const t = now();
      for (; i < total; i++) {
        const at = due(i);
        if (at > t + SEND_AHEAD_MS || at >= measureTo) break;
        sendAt(conns[i % conns.length]!, at, nextLane());
      }
      if (i >= total || due(i) >= measureTo) break;
      const next = due(i);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.max(0, next - now()));
      });
    }
    // The schedule may end a little before the planned window end; the window ends with it.
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, Math.max(0, plannedTo - now()));
      if (!sending || broken !== undefined) r();
    });
    endWindow();
  }
  clearTimeout(windowStart);
  clearTimeout(windowEnd);
  endWindow();

  // Drain what is still outstanding, bounded.
  const drainUntil = now() + spec.drainTimeoutMs;
  while (sentAt.size > 0 && broken === undefined && now() < drainUntil) {
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, Math.min(100, Math.max(0, drainUntil - now())));
    });
  }
  wake = undefined;
  if (broken !== undefined) {
    for (const c of conns) c.close();
    throw new Error(broken);
  }
  let unanswered = 0;
  const t = now();
  for (const [id, t0] of sentAt) {
    if (t0 >= measureFrom && t0 < measureTo) {
      unanswered++;
      recordMs(hist, t - t0); // a lower bound: leaving them out would flatter an overloaded server
      const lane = lanes?.[laneOf.get(id) ?? 0];
      if (lane !== undefined) {
        lane.unanswered++;
        recordMs(lane.hist, t - t0);
      }
    }
  }
  for (const c of conns) c.close();
  /** The per-priority and `overloaded` figures; nothing without a mix. */
  const mixReport = (): Pick<GeneratorReport, 'byPriority' | 'overloaded' | 'sendBufferMaxBytes'> => {
    if (lanes === undefined || mix === undefined) return {};
    const byPriority: NonNullable<GeneratorReport['byPriority']> = {};
    PRIORITIES.forEach((p, l) => {
      if (!(mix[p] > 0)) return;
      const s = lanes[l]!;
      const errorCount = Object.values(s.errors).reduce((a, b) => a + b, 0);
      byPriority[p] = {
        scheduled: s.ok + errorCount + s.unanswered,
        ok: s.ok,
        okCompletedInWindow: s.okInWindow,
        errors: s.errors,
        unanswered: s.unanswered,
        histogram: encodeHistogram(s.hist),
        serverHistogram: encodeHistogram(s.serverHist),
      };
    });
    return {
      byPriority,
      overloaded: {
        count: overloadedCount,
        histogram: encodeHistogram(overloadedHist),
        missingRetryAfter,
        reasons,
        retryAfterMs: { count: retry.count, sum: retry.sum, min: retry.count > 0 ? retry.min : 0, max: retry.max },
      },
      sendBufferMaxBytes: sendBufferMax,
    };
  };
  const cpu = cpuUsed ?? { user: 0, system: 0 };
  return {
    sent,
    ok,
    okCompletedInWindow: okInWindow,
    okFromWindowStart,
    errors,
    unanswered,
    histogram: encodeHistogram(hist),
    measureFrom,
    measureTo,
    timeline: { startAt, bucketMs: 1000, ok: tlOk, errors: tlErr },
    perNode,
    forwarded,
    batchSizeSum,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    loopMaxMs: Number.isFinite(loop.max) ? loop.max / 1e6 : 0,
    ...(spec.mode.kind === 'open' ? { sendLateHistogram: encodeHistogram(lateHist) } : {}),
    ...mixReport(),
  };
}

function main(): void {
  if (process.send === undefined) {
    process.stderr.write('loadgen: run by the bench (forked with an IPC channel), not directly\n');
    process.exit(2);
  }
  // It sends the same tensor frames the node receives, and V8 misjudges them the same way
  // (src/heapGrowth.ts): without this the generator runs a full collection every ~100 ms, on
  // the cores the server under test needs.
  applyHeapGrowth(DEFAULT_HEAP_GROWTH_PERCENT);
  let go!: (startAt: number) => void;
  let stop!: () => void;
  const started = new Promise<number>((r) => (go = r));
  const stopped = new Promise<void>((r) => (stop = r));
  // Without the bench there is nobody to report to: leave at once.
  process.on('disconnect', () => process.exit(1));
  process.on('message', (msg: ToGenerator) => {
    switch (msg.t) {
      case 'run': {
        const s = msg.spec;
        const budgetMs = (s.warmupS + s.durationS) * 1000 + s.drainTimeoutMs + 60_000;
        setTimeout(() => {
          process.stderr.write(`loadgen: still running after ${budgetMs} ms; exiting\n`);
          process.exit(1);
        }, budgetMs).unref();
        run(s, started, stopped).then(
          (report) => post({ t: 'done', report }),
          (e: unknown) => post({ t: 'failed', message: e instanceof Error ? e.message : String(e) }),
        );
        break;
      }
      case 'go':
        go(msg.startAt);
        break;
      case 'stop':
        stop();
        break;
    }
  });
}

main();
