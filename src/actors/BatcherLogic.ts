/**
 * The batcher's behaviour as a transition function: `transition(state, msg,
 * now)` updates the state it is given and returns the effects for the actor
 * shell to carry out (start a run, answer a request, deliver a batch). No
 * sockets, threads, timers or nact here, so tests drive it on simulated time.
 *
 * The state is the model's ledger on this node: every accepted request is
 * either queued or in exactly one worker's in-flight batch until an effect
 * answers it, so a worker crash can put its batch back instead of losing it.
 */
import { ActorserveError, deadlineExceeded, internal, invalidRequest, overloaded, unavailable } from '../errors.js';
import type { Priority } from '../transport/protocol.js';
import { Deque } from './Deque.js';

export interface QueueItem {
  /** Unique among the node's outstanding requests. */
  readonly key: string;
  readonly priority: Priority;
  /** Requests share a batch only with an equal bucket (same non-batch dims). */
  readonly bucket: string;
  /** Rows in dimension 0. */
  readonly rows: number;
  /** Absolute time on the batcher's clock; Infinity when none. */
  readonly deadline: number;
  enqueuedAt: number;
  /** Runs started so far. */
  attempts: number;
  /** Was in a batch whose worker crashed: runs alone from now on, so a poison request only hurts itself. */
  isolate: boolean;
  /** Arrival order, assigned on enqueue. */
  seq: number;
  /** Tensor bytes it holds, counted against the node's memory budget. Default 0. */
  readonly bytes?: number;
  /** Who sent it (a connection); under pressure no owner may hold more than its share of the queue. */
  readonly owner?: string;
}

/** Bytes of queued and running tensors on a node, shared by its batchers. */
export interface MemoryBudget {
  used: number;
  max: number;
}

export interface BatcherSettings {
  maxBatch: number;
  /** Hard cap on queued requests. At it, a new request displaces the newest queued one of lower priority, or is refused. */
  maxQueue: number;
  maxAttempts: number;
  /** Past this many queued requests, low priority is refused and no owner may exceed its fair share. Default ⌈0.75·maxQueue⌉. */
  softQueue?: number;
  /**
   * Longest expected wait a request is admitted into, in ms: the rows that
   * would run before it (queued ahead of it and running now) times the
   * measured ms per row, over the live workers. Past it the answer is
   * `overloaded` at once rather than a late result. Only work that runs
   * first counts: high priority waits behind high work alone, and its bound
   * is twice this; low priority is held to half, and a queued low request
   * that has waited LOW_SHED_AFTER times that (work of higher priority kept
   * coming ahead of it) is shed with `overloaded`. A connection holding less
   * than an equal share of the queue is still admitted up to twice its bound,
   * so one flooding client cannot lock the others out. Default: none.
   */
  maxQueueDelayMs?: number;
  /**
   * Rows a batch is filled to when more are waiting (Triton's preferred batch
   * size): past the size a model runs best at, a bigger batch only adds
   * latency. A single request of more rows, up to maxBatch, still runs
   * whole. Default maxBatch.
   */
  preferredBatch?: number;
  /**
   * Batches a worker holds at once: the one it runs and, behind it, full
   * batches handed over early so its thread starts the next run the moment
   * one ends instead of waiting for the event loop to hear of it. Only a
   * batch of preferredBatch rows is staged (below that the queue is short,
   * and waiting lets the batch fill), or one of high priority. Above 1, a
   * worker also takes one high-priority batch beyond this depth, which its
   * thread runs before the staged ones: high work waits for the running
   * batch alone. Default 1 (one at a time).
   */
  pipeline?: number;
}

export interface Batch<R extends QueueItem> {
  id: number;
  worker: string;
  requests: R[];
  rows: number;
  bucket: string;
  startedAt: number;
}

type WorkerSlot<R extends QueueItem> =
  | { state: 'starting' }
  | { state: 'idle' }
  /** `batches`: the one running first, then the staged ones, in the order they were handed over; `headSince`: when the first began (or the one before it ended). */
  | { state: 'busy'; batches: Batch<R>[]; headSince: number }
  | { state: 'stopped' };

const LANES: readonly Priority[] = ['high', 'normal', 'low'];
const laneOf = (p: Priority): number => (p === 'high' ? 0 : p === 'normal' ? 1 : 2);
const HIGH_LANE = laneOf('high');

export interface BatcherState<R extends QueueItem> {
  readonly settings: BatcherSettings;
  /** One lane per priority, high first; each maps bucket → FIFO. */
  readonly lanes: Map<string, Deque<R>>[];
  readonly workers: Map<string, WorkerSlot<R>>;
  queued: number;
  nextSeq: number;
  nextBatchId: number;
  /** Smoothed ms per batch from dispatch to done, whatever its size; undefined until one has run. */
  batchMs: number | undefined;
  /**
   * Smoothed ms per row of batches at least half of maxBatch, the rate a
   * backlog drains at; undefined until one has run.
   */
  msPerRowFull: number | undefined;
  /**
   * Smoothed ms per row of high-priority batches (batches of their own, most
   * of one or two rows, dearer per row than a full batch); undefined until
   * one has run.
   */
  msPerRowHigh: number | undefined;
  readonly softQueue: number;
  /** Queued requests per owner. */
  readonly owners: Map<string, number>;
  /** Queued rows per lane (high, normal, low), for the expected wait. */
  readonly rowsByLane: number[];
  readonly budget: MemoryBudget;
  /** Rows admitted per ms in each lane (high, normal, low), decayed over ARRIVAL_WINDOW_MS, as of `arrivalsAt`. */
  readonly arrivals: number[];
  arrivalsAt: number;
  /** When high-priority work stops counting as arriving unless more is admitted (fillTo): -Infinity before any. */
  highQuietAt: number;
  /** No queued request expires (deadline, or shedding of low priority) before this; it may be earlier than the first: exact after a `tick`. */
  deadlineFloor: number;
}

export type BatcherMsg<R extends QueueItem> =
  | { t: 'enqueue'; req: R }
  | { t: 'cancel'; key: string }
  | { t: 'workerReady'; worker: string }
  /** `next`: the batch the worker started after this one, when it had one waiting (it runs urgent ones first). */
  | { t: 'batchDone'; worker: string; batchId: number; inferMs: number; next?: number }
  /** `innocent`: the worker was taken down from outside (a sibling's restart), not by its batch. */
  | { t: 'workerCrashed'; worker: string; innocent?: boolean }
  | { t: 'workerStopped'; worker: string; innocent?: boolean }
  | { t: 'tick' }
  /** The node is leaving: everything queued is answered `unavailable`, which the shell hands to other nodes. */
  | { t: 'drain' };

/**
 * Why a batcher answered a request `overloaded` (the metric's `reason`):
 * refused on arrival because its expected queue wait was past the bound
 * (`queue_delay`), the queue was full (`queue_full`) or the node's memory
 * budget for queued tensors spent (`memory_budget`), low priority past the
 * soft limit (`soft_limit`), its connection or address holding its share
 * of the queue (`fair_share`); or dropped once queued, for higher-priority
 * work (`displaced`) or, low priority, after waiting its shedding time
 * (`low_waited`).
 */
export type ShedReason = 'queue_delay' | 'queue_full' | 'memory_budget' | 'soft_limit' | 'fair_share' | 'displaced' | 'low_waited';

/** A request refused on arrival: why, for metrics, and the message its client gets. */
interface Refusal {
  reason: ShedReason;
  message: string;
}

export type BatcherEffect<R extends QueueItem> =
  | { t: 'run'; batch: Batch<R> }
  | { t: 'complete'; batch: Batch<R> }
  /** `shed` names why, when the answer is `overloaded`. */
  | { t: 'reject'; req: R; error: ActorserveError; shed?: ShedReason };

/**
 * @param budget shared with the node's other batchers; default unbounded.
 * @throws RangeError when a setting is not a positive integer, or softQueue exceeds maxQueue.
 */
export function initialBatcherState<R extends QueueItem>(
  settings: BatcherSettings,
  workers: readonly string[] = [],
  budget: MemoryBudget = { used: 0, max: Infinity },
): BatcherState<R> {
  for (const [k, v] of Object.entries(settings)) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`batcher setting ${k} must be a positive integer, got ${v}`);
  }
  if ((settings.preferredBatch ?? 0) > settings.maxBatch) throw new RangeError(`preferredBatch ${settings.preferredBatch} exceeds maxBatch ${settings.maxBatch}`);
  const softQueue = settings.softQueue ?? Math.ceil(0.75 * settings.maxQueue);
  if (softQueue > settings.maxQueue) throw new RangeError(`softQueue ${softQueue} exceeds maxQueue ${settings.maxQueue}`);
  return {
    softQueue,
    owners: new Map(),
    rowsByLane: LANES.map(() => 0),
    budget,
    settings,
    lanes: LANES.map(() => new Map()),
    workers: new Map(workers.map((w) => [w, { state: 'starting' }])),
    queued: 0,
    nextSeq: 0,
    nextBatchId: 1,
    batchMs: undefined,
    msPerRowFull: undefined,
    msPerRowHigh: undefined,
    deadlineFloor: Infinity,
    arrivals: LANES.map(() => 0),
    arrivalsAt: 0,
    highQuietAt: -Infinity,
  };
}

export function transition<R extends QueueItem>(s: BatcherState<R>, msg: BatcherMsg<R>, now: number): BatcherEffect<R>[] {
  const fx: BatcherEffect<R>[] = [];
  switch (msg.t) {
    case 'enqueue':
      enqueue(s, msg.req, now, fx);
      break;
    case 'cancel':
      cancel(s, msg.key, fx);
      break;
    case 'workerReady': {
      const slot = s.workers.get(msg.worker);
      // A late "ready" for a slot that is busy or stopped would double-book it.
      if (slot === undefined || slot.state === 'starting') s.workers.set(msg.worker, { state: 'idle' });
      break;
    }
    case 'batchDone': {
      const slot = s.workers.get(msg.worker);
      // Only the batch the worker is running can be done.
      const batch = slot?.state === 'busy' ? slot.batches[0] : undefined;
      if (slot?.state !== 'busy' || batch?.id !== msg.batchId) break;
      slot.batches.shift();
      startNext(slot.batches, msg.next);
      for (const r of batch.requests) s.budget.used -= r.bytes ?? 0;
      // Service time, from dispatch (or the end of the batch before it) to done: a backlog drains at
      // this pace, not at the pace of the run alone (handing the batch to the thread and the result
      // back, and a thread waiting for a core, count too).
      const serviceMs = Math.max(msg.inferMs, now - Math.max(batch.startedAt, slot.headSince));
      if (slot.batches.length === 0) s.workers.set(msg.worker, { state: 'idle' });
      else slot.headSince = now;
      s.batchMs = smooth(s.batchMs, serviceMs);
      const perRow = serviceMs / batch.rows;
      // Full batches run at least as fast per row as small ones, so a small batch faster per row than
      // the estimate proves it stale (a cold first batch, a stall): without this, refusals kept batches
      // small and a slow estimate was never replaced.
      if (2 * batch.rows >= preferredRows(s) || (s.msPerRowFull !== undefined && perRow < s.msPerRowFull)) {
        // One slow batch is one sample, not a new rate: a stall (a GC pause, a stopped process) counted
        // whole made the node refuse most work until fresh batches wore it off. A real slowdown still
        // comes through, each batch raising the estimate by at most (MAX_SAMPLE_STEP − 1) × 20%.
        const sample = s.msPerRowFull === undefined ? perRow : Math.min(perRow, MAX_SAMPLE_STEP * s.msPerRowFull);
        s.msPerRowFull = smooth(s.msPerRowFull, sample);
      }
      if (isUrgent(batch)) s.msPerRowHigh = smooth(s.msPerRowHigh, s.msPerRowHigh === undefined ? perRow : Math.min(perRow, MAX_SAMPLE_STEP * s.msPerRowHigh));
      fx.push({ t: 'complete', batch });
      break;
    }
    case 'workerCrashed':
    case 'workerStopped': {
      const slot = s.workers.get(msg.worker);
      if (slot === undefined || slot.state === 'stopped') break;
      s.workers.set(msg.worker, { state: msg.t === 'workerCrashed' ? 'starting' : 'stopped' });
      if (slot.state === 'busy') {
        // The first batch was running when the worker went down; the ones staged behind it never ran.
        // Back to the front in reverse, so they keep their order ahead of the queue.
        for (let i = slot.batches.length - 1; i >= 0; i--) requeueCrashed(s, slot.batches[i]!, fx, i === 0 && !msg.innocent);
      }
      if (!hasLiveWorker(s)) rejectAll(s, () => unavailable('no worker is left for this model'), fx);
      break;
    }
    case 'tick':
      expire(s, now, fx);
      break;
    case 'drain':
      rejectAll(s, () => unavailable('node is leaving'), fx);
      break;
    default:
      return assertNever(msg);
  }
  dispatch(s, now, fx);
  return fx;
}

/** Requests waiting, per lane, for metrics and tests. */
export function queuedByPriority<R extends QueueItem>(s: BatcherState<R>): Record<Priority, number> {
  const count = (lane: Map<string, Deque<R>>) => [...lane.values()].reduce((n, q) => n + q.length, 0);
  return { high: count(s.lanes[0]!), normal: count(s.lanes[1]!), low: count(s.lanes[2]!) };
}

/** Rows in running batches. */
function runningRows<R extends QueueItem>(s: BatcherState<R>): number {
  let rows = 0;
  for (const w of s.workers.values()) if (w.state === 'busy') for (const b of w.batches) rows += b.rows;
  return rows;
}

/** Rows waiting in every lane. */
const queuedRows = <R extends QueueItem>(s: BatcherState<R>): number => s.rowsByLane.reduce((a, b) => a + b, 0);

function liveWorkers<R extends QueueItem>(s: BatcherState<R>): number {
  let n = 0;
  for (const w of s.workers.values()) if (w.state !== 'stopped') n++;
  return n;
}

const smooth = (avg: number | undefined, x: number): number => (avg === undefined ? x : 0.8 * avg + 0.2 * x);
/** A batch's ms per row counts as at most this many times the current estimate. */
export const MAX_SAMPLE_STEP = 4;

/**
 * The ms per row a backlog drains at. A backlog runs in full batches, so it
 * is measured on batches at least half full when some have run, and lowered
 * by any smaller batch that ran faster per row than that. Before that,
 * a full batch is assumed to take as long as the batches seen so far (small
 * ones run at a worse rate per row, which would refuse a first burst that
 * full batches then clear); before anything has run, 0: no wait predicted.
 */
export const drainMsPerRow = <R extends QueueItem>(s: BatcherState<R>): number =>
  s.msPerRowFull ?? (s.batchMs === undefined ? 0 : s.batchMs / preferredRows(s));

/** The batch size the drain rate is measured on: preferredBatch (or maxBatch), whatever batches fill to for now. */
const preferredRows = <R extends QueueItem>(s: BatcherState<R>): number => s.settings.preferredBatch ?? s.settings.maxBatch;

/**
 * High-priority rows admitted per ms (averaged over ARRIVAL_WINDOW_MS) at or
 * above which batches fill to half of preferredBatch: 5 a second.
 */
export const HIGH_ARRIVING_ROWS_PER_MS = 0.005;

/**
 * High-priority work has stopped arriving once this many of its mean gaps
 * (at its averaged rate) pass without one: 17 ms after 300 requests of one
 * row a second, 1 s after 5. The average alone takes ln(rate / threshold)
 * windows to fall under the threshold (~4.1 s after 300 a second), and
 * batches stayed half full all that time (a closed loop right after 3×
 * overload with 10% high ran 2.8–3.0 rows a batch against 4.0). A gap of 5
 * means comes by chance once in ~150 gaps of a Poisson stream, and then costs
 * one batch filled whole.
 */
export const HIGH_QUIET_GAPS = 5;

/**
 * Rows a batch is filled to when work is waiting: preferredBatch, or half of
 * it while high-priority work keeps arriving (its averaged rate at least
 * HIGH_ARRIVING_ROWS_PER_MS, the last request admitted less than
 * HIGH_QUIET_GAPS of its mean gaps before `now`). High work waits for the batch
 * its worker is running, which nothing can cut short, so that batch is kept
 * short while it matters. Measured on text-orientation (preferredBatch 4)
 * under 3× overload with 10% high, three A/B pairs of the bench's overload
 * phase, this rule against batches of 4 throughout: high-priority p99 19–26
 * against 29–33 ms, p99 time to `overloaded` 14–16 against 18–22 ms,
 * results per second the same (773–860 against 805–845). Batches of 2
 * throughout did as well there, but a closed loop without high work lost
 * ~6% at 2, so without high work batches keep the full size.
 * (The rate decays only as requests are admitted: with nothing arriving the
 * batch size does not matter.)
 */
export const fillTo = <R extends QueueItem>(s: BatcherState<R>, now: number): number => {
  const arriving = s.arrivals[HIGH_LANE]! >= HIGH_ARRIVING_ROWS_PER_MS && now <= s.highQuietAt;
  return arriving ? Math.ceil(preferredRows(s) / 2) : preferredRows(s);
};

/** Expected ms until `rowsAhead` more rows and the running batches are done. */
const expectedWaitMs = <R extends QueueItem>(s: BatcherState<R>, rowsAhead: number): number =>
  ((rowsAhead + runningRows(s)) * drainMsPerRow(s)) / Math.max(1, liveWorkers(s));

/** When to come back: about the time the whole queue takes to drain, 5 ms to 10 s. */
export const retryAfterMs = <R extends QueueItem>(s: BatcherState<R>): number =>
  Math.max(5, Math.min(10_000, Math.round(expectedWaitMs(s, queuedRows(s)))));

function enqueue<R extends QueueItem>(s: BatcherState<R>, req: R, now: number, fx: BatcherEffect<R>[]): void {
  // Gateways validate this already; requests from peers arrive pre-validated too, but a request that
  // could never fit a batch would stall takeBatch, so the ledger refuses it itself.
  if (!(Number.isInteger(req.rows) && req.rows >= 1 && req.rows <= s.settings.maxBatch)) {
    fx.push({ t: 'reject', req, error: invalidRequest(`${req.rows} rows do not fit maxBatch ${s.settings.maxBatch}`) });
    return;
  }
  if (!hasLiveWorker(s)) {
    fx.push({ t: 'reject', req, error: unavailable('no worker is left for this model') });
    return;
  }
  if (req.deadline <= now) {
    fx.push({ t: 'reject', req, error: deadlineExceeded() });
    return;
  }
  const refusal = admission(s, req, now, fx);
  if (refusal) {
    fx.push({ t: 'reject', req, error: overloaded(refusal.message, retryAfterMs(s)), shed: refusal.reason });
    return;
  }
  req.seq = s.nextSeq++;
  req.enqueuedAt = now;
  noteArrival(s, req, now);
  queueBack(s, req);
  s.budget.used += req.bytes ?? 0;
}

/**
 * Load shedding, cheapest loss first: a request that would wait past the
 * queue-delay bound is refused at once; low priority goes once the queue is
 * past its soft limit; a full queue or memory budget makes room for a
 * higher priority by dropping the newest request of the lowest priority
 * below it; under pressure no owner may hold more than its share of normal
 * and low work.
 * Returns why the request is refused, or undefined to admit it.
 */
function admission<R extends QueueItem>(s: BatcherState<R>, req: R, now: number, fx: BatcherEffect<R>[]): Refusal | undefined {
  // First, and independent of shedding: only rows of its own priority or higher are ahead of a request.
  const late = queueDelayRefusal(s, req, now);
  if (late) return late;
  const needCount = s.queued - s.settings.maxQueue + 1;
  const needBytes = s.budget.used + (req.bytes ?? 0) - s.budget.max;
  if (needCount > 0 || needBytes > 0) {
    // Shed only when that makes room; never drop work and then refuse anyway.
    const victims = planShed(s, laneOf(req.priority), needCount, needBytes);
    if (!victims) {
      return needCount > 0
        ? { reason: 'queue_full', message: `model queue is full (${s.settings.maxQueue})` }
        : { reason: 'memory_budget', message: 'node memory budget for queued tensors is spent' };
    }
    for (const { lane, bucket, q } of victims) {
      const victim = q.pop()!;
      if (q.length === 0) s.lanes[lane]!.delete(bucket);
      left(s, victim);
      fx.push({ t: 'reject', req: victim, error: overloaded('shed for higher-priority work', retryAfterMs(s)), shed: 'displaced' });
    }
  }
  if (s.queued >= s.softQueue) {
    if (req.priority === 'low') return { reason: 'soft_limit', message: 'queue is past its soft limit: low priority is shed first' };
    const owner = req.owner;
    // High priority is shed last: the fair share bounds bulk traffic, not urgent work.
    if (owner !== undefined && req.priority !== 'high') {
      const owners = s.owners.size + (s.owners.has(owner) ? 0 : 1);
      if ((s.owners.get(owner) ?? 0) >= Math.ceil(s.settings.maxQueue / owners)) {
        return { reason: 'fair_share', message: 'this connection holds its share of the model queue' };
      }
    }
  }
  return undefined;
}

/** Arrival rates are averaged over about this long. */
const ARRIVAL_WINDOW_MS = 1_000;
/** However busy the lanes above, a wait is never taken to stretch by more than 1 / (1 − this). */
const MAX_HIGHER_SHARE = 0.9;

/** Counts an admitted request in its lane's arrival rate, decaying every lane to `now` first. */
function noteArrival<R extends QueueItem>(s: BatcherState<R>, req: R, now: number): void {
  if (now > s.arrivalsAt) {
    const k = Math.exp(-(now - s.arrivalsAt) / ARRIVAL_WINDOW_MS);
    for (let i = 0; i < s.arrivals.length; i++) s.arrivals[i]! *= k;
    s.arrivalsAt = now;
  }
  s.arrivals[laneOf(req.priority)]! += req.rows / ARRIVAL_WINDOW_MS;
  // HIGH_QUIET_GAPS mean gaps between high requests of this one's size, at the rate just updated.
  if (req.priority === 'high') s.highQuietAt = now + (HIGH_QUIET_GAPS * req.rows) / s.arrivals[HIGH_LANE]!;
}

/**
 * The share of the workers' time that work of a higher priority than
 * `priority` arriving from now on will take: each higher lane's recent
 * arrival rate × what a row of it costs (high rows run in batches of their
 * own and count at their own measured cost, never below the drain rate;
 * normal rows at the drain rate). A request waits for the rows ahead of it
 * *and* for the higher priority work that keeps arriving and jumps ahead, so
 * its expected wait is stretched by 1 / (1 − this share). Without it, normal
 * work under a steady 10% of high waited 2–3× the bound it was admitted
 * into; with high rows counted at the drain rate of full batches, ~1.1–1.3×.
 */
export function higherPriorityShare<R extends QueueItem>(s: BatcherState<R>, priority: Priority, now: number): number {
  const lane = laneOf(priority);
  if (lane === 0) return 0;
  const drain = drainMsPerRow(s);
  let msPerMs = 0;
  for (let li = 0; li < lane; li++) msPerMs += s.arrivals[li]! * (li === HIGH_LANE ? Math.max(drain, s.msPerRowHigh ?? drain) : drain);
  if (msPerMs === 0) return 0;
  msPerMs *= Math.exp(-Math.max(0, now - s.arrivalsAt) / ARRIVAL_WINDOW_MS);
  return Math.min(MAX_HIGHER_SHARE, msPerMs / Math.max(1, liveWorkers(s)));
}

/** The wait a request of `priority` is admitted into under `maxQueueDelayMs`. */
export const queueDelayBound = (limit: number, priority: Priority): number =>
  priority === 'high' ? 2 * limit : priority === 'low' ? limit / 2 : limit;

/** The queue-delay bound of {@link BatcherSettings.maxQueueDelayMs}, or undefined to admit. */
function queueDelayRefusal<R extends QueueItem>(s: BatcherState<R>, req: R, now: number): Refusal | undefined {
  const limit = s.settings.maxQueueDelayMs;
  if (limit === undefined) return undefined;
  const lane = laneOf(req.priority);
  let ahead = 0;
  for (let li = 0; li <= lane; li++) ahead += s.rowsByLane[li]!;
  const bound = queueDelayBound(limit, req.priority);
  const wait = expectedWaitMs(s, ahead) / (1 - higherPriorityShare(s, req.priority, now));
  if (wait <= bound) return undefined;
  const owner = req.owner;
  if (wait <= 2 * bound && owner !== undefined) {
    const owners = s.owners.size + (s.owners.has(owner) ? 0 : 1);
    if ((s.owners.get(owner) ?? 0) < s.queued / owners) return undefined;
  }
  return { reason: 'queue_delay', message: `expected queue wait ${Math.round(wait)} ms is past ${Math.round(bound)} ms` };
}

/**
 * Picks the requests to drop to free `needCount` queue slots and `needBytes`
 * of budget: the newest first, of the lowest priority strictly below `rank`
 * first. Returns the deques to pop from, in order, or undefined when even
 * all of them would not make room. Changes nothing.
 */
function planShed<R extends QueueItem>(s: BatcherState<R>, rank: number, needCount: number, needBytes: number) {
  const plan: { lane: number; bucket: string; q: Deque<R> }[] = [];
  let count = 0;
  let bytes = 0;
  for (let li = s.lanes.length - 1; li > rank; li--) {
    // Newest first across this lane's buckets: merge the deques from their tails, by cursor.
    const tails = [...s.lanes[li]!].map(([bucket, q]) => ({ bucket, q, taken: 0 }));
    for (;;) {
      if (count >= needCount && bytes >= needBytes) return plan;
      let best: (typeof tails)[number] | undefined;
      let bestItem: R | undefined;
      for (const t of tails) {
        const item = t.q.fromEnd(t.taken);
        if (item && (!bestItem || item.seq > bestItem.seq)) {
          best = t;
          bestItem = item;
        }
      }
      if (!best || !bestItem) break;
      best.taken++;
      plan.push({ lane: li, bucket: best.bucket, q: best.q });
      count++;
      bytes += bestItem.bytes ?? 0;
    }
  }
  return count >= needCount && bytes >= needBytes ? plan : undefined;
}

/** Accounting when a request joins a queue. */
function queueBack<R extends QueueItem>(s: BatcherState<R>, req: R, front = false): void {
  const q = bucketQueue(s, req);
  if (front) q.unshift(req);
  else q.push(req);
  s.queued++;
  s.rowsByLane[laneOf(req.priority)]! += req.rows;
  const at = expiresAt(s, req);
  if (at < s.deadlineFloor) s.deadlineFloor = at;
  if (req.owner !== undefined) s.owners.set(req.owner, (s.owners.get(req.owner) ?? 0) + 1);
}

/** Accounting when a request leaves a queue (to run, or answered). */
function dequeued<R extends QueueItem>(s: BatcherState<R>, req: R): void {
  if (--s.queued === 0) s.deadlineFloor = Infinity;
  s.rowsByLane[laneOf(req.priority)]! -= req.rows;
  if (req.owner !== undefined) {
    const n = (s.owners.get(req.owner) ?? 1) - 1;
    if (n > 0) s.owners.set(req.owner, n);
    else s.owners.delete(req.owner);
  }
}

/** A queued request answered without running: it leaves the queue and the budget. */
function left<R extends QueueItem>(s: BatcherState<R>, req: R): void {
  dequeued(s, req);
  s.budget.used -= req.bytes ?? 0;
}

function bucketQueue<R extends QueueItem>(s: BatcherState<R>, req: R): Deque<R> {
  const lane = s.lanes[laneOf(req.priority)]!;
  let q = lane.get(req.bucket);
  if (!q) lane.set(req.bucket, (q = new Deque<R>()));
  return q;
}

function cancel<R extends QueueItem>(s: BatcherState<R>, key: string, fx: BatcherEffect<R>[]): void {
  for (const lane of s.lanes) {
    for (const [bucket, q] of lane) {
      for (const req of q.removeWhere((r) => r.key === key)) {
        left(s, req);
        fx.push({ t: 'reject', req, error: new ActorserveError('cancelled', 'cancelled by the client') });
      }
      if (q.length === 0) lane.delete(bucket);
    }
  }
}

function requeueCrashed<R extends QueueItem>(s: BatcherState<R>, batch: Batch<R>, fx: BatcherEffect<R>[], blame: boolean): void {
  // Back to the front, newest first, so the batch keeps its order ahead of later arrivals.
  for (let i = batch.requests.length - 1; i >= 0; i--) {
    const req = batch.requests[i]!;
    if (!blame) {
      // Not this batch's fault: the run does not count, and it may batch again.
      req.attempts--;
      queueBack(s, req, true);
      continue;
    }
    if (req.attempts >= s.settings.maxAttempts) {
      s.budget.used -= req.bytes ?? 0;
      fx.push({ t: 'reject', req, error: internal(`request crashed the model's worker ${req.attempts} times`) });
      continue;
    }
    req.isolate = true;
    queueBack(s, req, true);
  }
}

function rejectAll<R extends QueueItem>(s: BatcherState<R>, error: () => ActorserveError, fx: BatcherEffect<R>[]): void {
  for (const lane of s.lanes) {
    for (const q of lane.values()) {
      for (const req of q.removeWhere(() => true)) {
        left(s, req);
        fx.push({ t: 'reject', req, error: error() });
      }
    }
    lane.clear();
  }
}

/**
 * A queued low-priority request that has waited this many times the wait it
 * was admitted into is shed (`overloaded`): under sustained load, normal and
 * high work keeps arriving ahead of it, and it would otherwise wait until the
 * load ends, far past what admission promised.
 */
export const LOW_SHED_AFTER = 4;

/** When a queued request leaves unrun: its deadline, or for low priority the time it is shed, whichever is first. */
const expiresAt = <R extends QueueItem>(s: BatcherState<R>, r: R): number => {
  const limit = s.settings.maxQueueDelayMs;
  if (r.priority !== 'low' || limit === undefined) return r.deadline;
  return Math.min(r.deadline, r.enqueuedAt + LOW_SHED_AFTER * queueDelayBound(limit, 'low'));
};

/** Answers every queued request whose deadline (or shedding time) has passed, and makes `deadlineFloor` exact. */
function expire<R extends QueueItem>(s: BatcherState<R>, now: number, fx: BatcherEffect<R>[]): void {
  let floor = Infinity;
  const expired = (r: R) => {
    const at = expiresAt(s, r);
    if (at <= now) return true;
    if (at < floor) floor = at;
    return false;
  };
  const shed: R[] = [];
  for (const lane of s.lanes) {
    for (const [bucket, q] of lane) {
      for (const req of q.removeWhere(expired)) {
        left(s, req);
        if (req.deadline <= now) fx.push({ t: 'reject', req, error: deadlineExceeded() });
        else shed.push(req);
      }
      if (q.length === 0) lane.delete(bucket);
    }
  }
  s.deadlineFloor = s.queued > 0 ? floor : Infinity;
  for (const req of shed) {
    const waited = Math.round(now - req.enqueuedAt);
    fx.push({ t: 'reject', req, error: overloaded(`low priority waited ${waited} ms behind other work and was shed`, retryAfterMs(s)), shed: 'low_waited' });
  }
}

/**
 * When the next `tick` is due: no queued request's deadline (or shedding
 * time) passes before it; Infinity while none has one. The shell arms one
 * timer for it instead of ticking on a fixed period, so an idle or
 * deadline-free queue costs nothing.
 */
export const nextDeadline = <R extends QueueItem>(s: BatcherState<R>): number => (s.queued > 0 ? s.deadlineFloor : Infinity);

const hasLiveWorker = <R extends QueueItem>(s: BatcherState<R>): boolean => liveWorkers(s) > 0;

function dispatch<R extends QueueItem>(s: BatcherState<R>, now: number, fx: BatcherEffect<R>[]): void {
  for (const [worker, slot] of s.workers) {
    if (slot.state !== 'idle') continue;
    const batch = takeBatch(s, worker, now, fx, 'any');
    if (!batch) return;
    s.workers.set(worker, { state: 'busy', batches: [batch], headSince: now });
    fx.push({ t: 'run', batch });
  }
  if ((s.settings.pipeline ?? 1) < 2) return;
  stageFull(s, now, fx);
  stageUrgent(s, now, fx);
}

/** Every worker is busy and work is waiting: full batches go behind the running ones, up to the pipeline depth. */
function stageFull<R extends QueueItem>(s: BatcherState<R>, now: number, fx: BatcherEffect<R>[]): void {
  const depth = s.settings.pipeline ?? 1;
  for (let staged = 1; staged < depth; staged++) {
    for (const [worker, slot] of s.workers) {
      if (slot.state !== 'busy' || slot.batches.length > staged) continue;
      if (queuedRows(s) < fillTo(s, now) && s.rowsByLane[HIGH_LANE] === 0) return;
      const batch = takeBatch(s, worker, now, fx, 'full');
      if (!batch) return;
      slot.batches.push(batch);
      fx.push({ t: 'run', batch });
    }
  }
}

/**
 * High-priority work waits for no staged batch: a busy worker holding no
 * high-priority batch besides the running one takes one beyond the pipeline
 * depth, and its thread runs it next. (Measured under 3× overload with 10%
 * high: high waited for the running batch and a staged one of 8 rows.)
 */
function stageUrgent<R extends QueueItem>(s: BatcherState<R>, now: number, fx: BatcherEffect<R>[]): void {
  for (const [worker, slot] of s.workers) {
    if (s.rowsByLane[HIGH_LANE] === 0) return;
    if (slot.state !== 'busy' || slot.batches.some((b, i) => i > 0 && isUrgent(b))) continue;
    // High only: the high work queued may all have expired as the batch was taken.
    const batch = takeBatch(s, worker, now, fx, 'high');
    if (!batch) return;
    slot.batches.push(batch);
    fx.push({ t: 'run', batch });
  }
}

/** A batch the worker's thread runs before the non-urgent ones staged with it: high priority. */
export const isUrgent = (b: Batch<QueueItem>): boolean => b.requests[0]?.priority === 'high';

/**
 * Puts the batch the worker runs now first: the one it named (`next`); with
 * none named, the one handed over first, already first (its thread, idle
 * when it picked, runs whatever reaches it first).
 */
function startNext<R extends QueueItem>(batches: Batch<R>[], next: number | undefined): void {
  const at = next === undefined ? -1 : batches.findIndex((b) => b.id === next);
  if (at > 0) batches.unshift(...batches.splice(at, 1));
}

/**
 * Greedy batch: whatever is queued now, up to preferredBatch rows (or one
 * request of up to maxBatch rows). The oldest
 * request of the highest non-empty priority picks the bucket; a lower lane
 * contributes only once every higher lane is empty, so a higher priority
 * never waits behind a lower one; within a bucket, strictly FIFO.
 * High-priority rows run in batches of their own: filling one with normal or
 * low rows would make them wait for those rows' inference too (a batch of 8
 * text-orientation rows runs ~7× as long as one row).
 * `only`: take nothing unless the batch comes to preferredBatch rows or is
 * high priority (`full`), or is high priority (`high`).
 */
function takeBatch<R extends QueueItem>(s: BatcherState<R>, worker: string, now: number, fx: BatcherEffect<R>[], only: 'any' | 'full' | 'high'): Batch<R> | undefined {
  const fill = fillTo(s, now);
  pick: while (s.queued > 0) {
    const laneIx = s.lanes.findIndex((l) => l.size > 0);
    const head = laneIx < 0 ? undefined : oldestHead(s.lanes[laneIx]!);
    if (!head) return undefined;
    const requests: R[] = [];
    let rows = 0;
    for (let li = laneIx; li < s.lanes.length; li++) {
      const lane = s.lanes[li]!;
      const q = lane.get(head.bucket);
      while (q && q.length > 0) {
        const req = q.peek()!;
        if (req.deadline <= now) {
          q.shift();
          left(s, req);
          fx.push({ t: 'reject', req, error: deadlineExceeded() });
          if (q.length === 0) lane.delete(head.bucket);
          // The request that chose this bucket (the oldest head) is gone: choose again among the live
          // heads. Going on in its bucket formed a short batch there while another bucket held a full
          // one, and a busy worker was left without the batch it could have staged.
          if (requests.length === 0 && li === laneIx) continue pick;
          continue;
        }
        const alone = req.isolate || (requests.length > 0 && requests[0]!.isolate);
        if (requests.length > 0 && (alone || rows + req.rows > fill)) break;
        q.shift();
        dequeued(s, req);
        requests.push(req);
        rows += req.rows;
      }
      if (q && q.length === 0) lane.delete(head.bucket);
      const full = requests.length > 0 && (requests[0]!.isolate || rows >= fill);
      if (full || lane.size > 0 || (li === HIGH_LANE && requests.length > 0)) break;
    }
    if (requests.length === 0) continue; // everything looked at had expired
    const high = requests[0]!.priority === 'high';
    if ((only === 'full' && rows < fill && !high) || (only === 'high' && !high)) {
      // Not worth staging: back to the fronts of their queues, in order.
      for (let i = requests.length - 1; i >= 0; i--) queueBack(s, requests[i]!, true);
      return undefined;
    }
    for (const r of requests) r.attempts++;
    return { id: s.nextBatchId++, worker, requests, rows, bucket: head.bucket, startedAt: now };
  }
  return undefined;
}

function oldestHead<R extends QueueItem>(lane: Map<string, Deque<R>>): R | undefined {
  let best: R | undefined;
  for (const q of lane.values()) {
    const h = q.peek();
    if (h && (!best || h.seq < best.seq)) best = h;
  }
  return best;
}

function assertNever(x: never): never {
  throw new Error(`unhandled message ${JSON.stringify(x)}`);
}
