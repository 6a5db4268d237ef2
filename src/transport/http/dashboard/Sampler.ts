/**
 * One per node: reads the node's metrics once a second while at least one
 * dashboard feed is connected and pushes the same snapshot text to every
 * feed. It starts with the first feed and stops (its timer cleared) when the
 * last one closes, so an unwatched node pays nothing and a stopped node,
 * whose server terminates every feed, keeps no timer. The node pings the
 * feeds with its clients (`pingFeeds`): a browser gone without closing (a
 * laptop shut) would otherwise hold one of the capped feeds, and up to 1 MiB
 * of unsent snapshots, until TCP gives up.
 */
import type { WebSocket } from 'ws';
import { beat, type Liveness } from '../../keepalive.js';
import type { NodeContext } from '../context.js';
import { buildSnapshot, readTotals, type Totals } from './snapshot.js';

export interface SamplerOptions {
  /** Time between snapshots, ms. Default 1000. */
  intervalMs?: number;
  /** Most feeds at once on this node; more are closed with 1013. Default 64. */
  maxFeeds?: number;
  /** A feed with more than this many bytes unsent skips snapshots until it drains. Default 1 MiB. */
  maxBufferedBytes?: number;
  /** Largest message a feed may send before it is closed with 1009 (any other message is ignored). Default 1 KiB. */
  maxInboundBytes?: number;
  /** Monotonic clock for the rate windows, ms. Default `performance.now`. */
  now?: () => number;
  /** Wall clock for the snapshot's `time`, ms since the epoch. Default `Date.now`. */
  wallNow?: () => number;
}

const TRY_AGAIN_LATER = 1013;
const MESSAGE_TOO_BIG = 1009;
const OPEN = 1;

export class DashboardSampler {
  private readonly feeds = new Map<WebSocket, Liveness>();
  private timer: NodeJS.Timeout | undefined;
  private prev: Totals | undefined;
  private last: string | undefined;
  /** Bumped on every stop, so a reading that was in flight across a stop is dropped. */
  private generation = 0;
  private busy = false;
  private readonly intervalMs: number;
  private readonly maxFeeds: number;
  private readonly maxBuffered: number;
  private readonly maxInbound: number;
  private readonly now: () => number;
  private readonly wallNow: () => number;

  /** @throws RangeError for a non-positive interval or cap. */
  constructor(private readonly ctx: NodeContext, o: SamplerOptions = {}) {
    this.intervalMs = o.intervalMs ?? 1000;
    this.maxFeeds = o.maxFeeds ?? 64;
    this.maxBuffered = o.maxBufferedBytes ?? 1024 * 1024;
    this.maxInbound = o.maxInboundBytes ?? 1024;
    this.now = o.now ?? (() => performance.now());
    this.wallNow = o.wallNow ?? Date.now;
    for (const [k, v] of Object.entries({ intervalMs: this.intervalMs, maxFeeds: this.maxFeeds, maxBufferedBytes: this.maxBuffered, maxInboundBytes: this.maxInbound })) {
      if (!(Number.isFinite(v) && v > 0)) throw new RangeError(`${k} must be a positive number, got ${v}`);
    }
  }

  get feedCount(): number {
    return this.feeds.size;
  }

  get running(): boolean {
    return this.timer !== undefined;
  }

  /** Adds a browser feed: it gets the latest snapshot at once, then one per interval. */
  attach(ws: WebSocket): void {
    if (this.feeds.size >= this.maxFeeds) {
      ws.close(TRY_AGAIN_LATER, 'too many dashboard feeds');
      return;
    }
    const peer: Liveness = { awaitingPong: false };
    this.feeds.set(ws, peer);
    ws.on('pong', () => void (peer.awaitingPong = false));
    // Read-only: whatever the browser sends is ignored (beyond showing it is there), and anything big ends the feed.
    ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
      peer.awaitingPong = false;
      const size = Array.isArray(data) ? data.reduce((s, b) => s + b.length, 0) : data.byteLength;
      if (size > this.maxInbound) ws.close(MESSAGE_TOO_BIG, 'the dashboard feed accepts no input');
    });
    ws.on('error', () => undefined); // a 'close' follows
    ws.on('close', () => this.detach(ws));
    if (this.timer === undefined) this.start();
    else if (this.last !== undefined) ws.send(this.last);
  }

  /**
   * Pings every feed; one that answered neither the last ping nor with a message is terminated (its
   * 'close' detaches it). Returns how many were.
   */
  pingFeeds(): number {
    let gone = 0;
    for (const [ws, peer] of this.feeds) {
      if (ws.readyState !== OPEN || beat(ws, peer)) continue;
      ws.terminate();
      gone++;
    }
    return gone;
  }

  private detach(ws: WebSocket): void {
    this.feeds.delete(ws);
    if (this.feeds.size === 0) this.stop();
  }

  private start(): void {
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
    void this.tick(); // the first snapshot goes out at once (members and queues; rates from the next one on)
  }

  private stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.prev = undefined;
    this.last = undefined;
    this.busy = false;
    this.generation++;
  }

  private async tick(): Promise<void> {
    if (this.busy) return; // a slow reading is never stacked behind another
    this.busy = true;
    const gen = this.generation;
    try {
      const cur = await readTotals(this.ctx.metrics.registry, this.now());
      if (gen !== this.generation) return;
      const snapshot = buildSnapshot({
        node: this.ctx.nodeId,
        time: this.wallNow(),
        ready: this.ctx.isReady(),
        members: this.ctx.clusterView(),
        served: this.ctx.models.map((m) => m.name),
        queues: this.ctx.queueStats(),
        prev: this.prev,
        cur,
      });
      this.prev = cur;
      this.last = JSON.stringify(snapshot);
      for (const ws of this.feeds.keys()) {
        if (ws.readyState === OPEN && ws.bufferedAmount <= this.maxBuffered) ws.send(this.last);
      }
    } catch {
      // A failed reading (the node is stopping) costs one snapshot; the next tick tries again.
    } finally {
      if (gen === this.generation) this.busy = false;
    }
  }
}
