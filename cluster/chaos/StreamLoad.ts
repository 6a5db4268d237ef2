/**
 * Steady streaming load for the chaos suite over one raw WebSocket: at most
 * `window` requests unanswered, and, with `rate`, paced to that many
 * requests per second (a token bucket holding at most `window` tokens, so a
 * stall is not followed by more than one window of catch-up). Every reply
 * frame is recorded with its arrival time, so the run can be checked
 * afterwards (exactly one terminal reply per request, none foreign) and
 * turned into a throughput series.
 *
 * Why paced: on a shared 2-core machine the capacity of a cluster wanders by
 * a factor of two from second to second, and a pure closed loop measures
 * that wander. Paced well below capacity, results come at the offered rate
 * for as long as the cluster keeps up, so a dip is the fault's doing; when
 * requests get stuck, the window fills and throughput falls as it would for
 * a real client.
 *
 *   const load = await StreamLoad.open({ url, model: 'iris', window: 64, rate: 800, prefix: 'crash-iris' });
 *   load.start();
 *   ...                                   // inject a fault
 *   load.stopSending();
 *   await load.drain(20_000);             // wait for the last replies
 *   const report = load.report();
 *   load.close();
 *
 * Requests carry no deadline: a request stuck somewhere stays unanswered and
 * shows up as lost, rather than as a deadline error that hides where it went.
 */
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import type { ErrorFrame, ResultFrame, ServerFrame } from '../../src/transport/protocol.js';

export type LoadModel = 'iris' | 'text-orientation';

export interface StreamLoadOptions {
  url: string;
  model: LoadModel;
  /** Requests unanswered at most. */
  window: number;
  /** Requests per second; absent: a closed loop (a new request on every reply). */
  rate?: number;
  /** With `rate`: send only every this many ms, what the rate allows by then (bursts that batch together). Default 5. */
  burstMs?: number;
  /** Id prefix, unique per load so concurrent loads never share ids. */
  prefix: string;
}

export interface LoadReport {
  model: LoadModel;
  sent: number;
  /** Requests whose first reply was a result. */
  results: number;
  /** Requests whose first reply was an error, by code. */
  errors: Record<string, number>;
  /** Requests with no reply at the end. */
  lost: number;
  /** Requests with more than one reply frame delivered. */
  duplicates: number;
  /** Reply frames carrying an id this load never sent. */
  foreign: number;
  /** Results by the node that computed them. */
  byNode: Record<string, number>;
  /** Size of the batch each result was computed in, by node: mean and max. */
  batchSizes: Record<string, { mean: number; max: number }>;
  /** From sending a request to its first reply, ms. */
  latencyMs: { p50: number; p99: number; max: number } | undefined;
  /** Whether the connection closed before the load was done. */
  closedEarly: boolean;
}

interface Sent {
  at: number;
  frames: number;
  firstAt: number;
  kind: 'result' | 'error' | undefined;
  code: string | undefined;
  node: string | undefined;
}

const IRIS_ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.2, 2.9, 4.3, 1.3],
  [7.7, 3.0, 6.1, 2.3],
].map((r) => new Uint8Array(Float32Array.from(r).buffer));

/** One [1,3,48,192] image of noise, shared by every text-orientation request (the frame copies it). */
let textImage: Uint8Array | undefined;
const image = () => {
  if (!textImage) {
    const a = new Float32Array(3 * 48 * 192);
    for (let i = 0; i < a.length; i++) a[i] = Math.random() * 2 - 1;
    textImage = new Uint8Array(a.buffer);
  }
  return textImage;
};

export function inputsFor(model: LoadModel, seq: number): Record<string, { dtype: 'float32'; shape: number[]; data: Uint8Array }> {
  return model === 'iris'
    ? { input: { dtype: 'float32', shape: [1, 4], data: IRIS_ROWS[seq % IRIS_ROWS.length]! } }
    : { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: image() } };
}

export class StreamLoad {
  private readonly sent = new Map<string, Sent>();
  private seq = 0;
  private inFlight = 0;
  private sending = false;
  private foreign = 0;
  private closed = false;
  private tokens = 0;
  private refilledAt = 0;
  private timer: NodeJS.Timeout | undefined;
  /** performance.now() of every request's first result, in arrival order. */
  readonly resultTimes: number[] = [];
  /** Result arrival times by the node that computed them. */
  readonly resultTimesByNode = new Map<string, number[]>();
  private readonly batches = new Map<string, { sum: number; n: number; max: number }>();

  private constructor(readonly ws: WebSocket, readonly o: StreamLoadOptions) {
    ws.on('message', (data: Buffer) => this.onFrame(decodeUntrusted(data) as ServerFrame));
    ws.on('close', () => {
      this.closed = true;
      this.sending = false;
    });
    ws.on('error', () => undefined);
  }

  /** Connects and waits for the welcome frame. */
  static open(o: StreamLoadOptions): Promise<StreamLoad> {
    if (!Number.isInteger(o.window) || o.window < 1) throw new RangeError(`window must be a positive integer, got ${o.window}`);
    if (o.rate !== undefined && !(o.rate > 0)) throw new RangeError(`rate must be > 0, got ${o.rate}`);
    const ws = new WebSocket(o.url, { perMessageDeflate: false });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`no welcome from ${o.url} within 10 s`));
      }, 10_000);
      ws.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      ws.once('message', (data: Buffer) => {
        clearTimeout(timer);
        const f = decodeUntrusted(data) as ServerFrame;
        if (f.t !== 'welcome') return reject(new Error(`first frame was ${f.t}`));
        resolve(new StreamLoad(ws, o));
      });
    });
  }

  get outstanding(): number {
    return this.inFlight;
  }

  get sentCount(): number {
    return this.seq;
  }

  /** Starts (or resumes) sending: closed loop, a new request per reply; paced, what the rate allows, never past the window. */
  start(): void {
    this.sending = true;
    if (this.o.rate !== undefined && !this.timer) {
      this.tokens = 1;
      this.refilledAt = performance.now();
      this.timer = setInterval(() => this.pump(true), this.o.burstMs ?? 5);
    }
    this.pump();
  }

  stopSending(): void {
    this.sending = false;
    clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Ids sent and not yet answered (for "what was in flight at the fault"). */
  unansweredIds(): string[] {
    const out: string[] = [];
    for (const [id, s] of this.sent) if (s.frames === 0) out.push(id);
    return out;
  }

  /** When `id` got its first reply (performance.now()), if it did. */
  answeredAt(id: string): number | undefined {
    const s = this.sent.get(id);
    return s && s.frames > 0 ? s.firstAt : undefined;
  }

  /**
   * Waits until every request sent has a reply or `timeoutMs` passes, then
   * `graceMs` more for any duplicate to show up. Resolves with whether all
   * were answered.
   */
  async drain(timeoutMs: number, graceMs = 300): Promise<boolean> {
    const until = performance.now() + timeoutMs;
    while (this.inFlight > 0 && !this.closed && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, graceMs));
    return this.inFlight === 0;
  }

  report(): LoadReport {
    const batchSizes = Object.fromEntries([...this.batches].map(([n, b]) => [n, { mean: Math.round((b.sum / b.n) * 100) / 100, max: b.max }]));
    const r: LoadReport = { model: this.o.model, sent: this.seq, results: 0, errors: {}, lost: 0, duplicates: 0, foreign: this.foreign, byNode: {}, batchSizes, latencyMs: undefined, closedEarly: this.closed };
    const latencies: number[] = [];
    for (const s of this.sent.values()) {
      if (s.frames > 0) latencies.push(s.firstAt - s.at);
      if (s.frames === 0) r.lost++;
      if (s.frames > 1) r.duplicates++;
      if (s.kind === 'result') {
        r.results++;
        r.byNode[s.node!] = (r.byNode[s.node!] ?? 0) + 1;
      } else if (s.kind === 'error') {
        r.errors[s.code!] = (r.errors[s.code!] ?? 0) + 1;
      }
    }
    if (latencies.length > 0) {
      latencies.sort((a, b) => a - b);
      const at = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)]! * 10) / 10;
      r.latencyMs = { p50: at(0.5), p99: at(0.99), max: at(1) };
    }
    return r;
  }

  close(): void {
    this.stopSending();
    this.ws.terminate();
  }

  private pump(tick = false): void {
    if (this.o.burstMs !== undefined && this.o.rate !== undefined && !tick) return;
    if (this.o.rate !== undefined) {
      const t = performance.now();
      this.tokens = Math.min(this.o.window, this.tokens + ((t - this.refilledAt) * this.o.rate) / 1000);
      this.refilledAt = t;
    }
    while (this.sending && this.inFlight < this.o.window && this.ws.readyState === WebSocket.OPEN) {
      if (this.o.rate !== undefined) {
        if (this.tokens < 1) break;
        this.tokens--;
      }
      const id = `${this.o.prefix}-${this.seq}`;
      this.ws.send(encode({ t: 'infer', id, model: this.o.model, inputs: inputsFor(this.o.model, this.seq) }));
      this.seq++;
      this.inFlight++;
      this.sent.set(id, { at: performance.now(), frames: 0, firstAt: 0, kind: undefined, code: undefined, node: undefined });
    }
  }

  private onFrame(f: ServerFrame): void {
    if (f.t === 'welcome') return;
    const now = performance.now();
    const s = this.sent.get(String(f.id));
    if (!s) {
      this.foreign++;
      return;
    }
    s.frames++;
    if (s.frames > 1) return;
    s.firstAt = now;
    this.inFlight--;
    if (f.t === 'result') {
      const r = f as ResultFrame;
      s.kind = 'result';
      s.node = r.node;
      this.resultTimes.push(now);
      let list = this.resultTimesByNode.get(r.node);
      if (!list) this.resultTimesByNode.set(r.node, (list = []));
      list.push(now);
      let b = this.batches.get(r.node);
      if (!b) this.batches.set(r.node, (b = { sum: 0, n: 0, max: 0 }));
      b.sum += r.batchSize;
      b.n++;
      b.max = Math.max(b.max, r.batchSize);
    } else {
      s.kind = 'error';
      s.code = (f as ErrorFrame).code;
    }
    this.pump();
  }
}
