/**
 * What the bench asks of a load-generator process and what it hands back,
 * over the fork IPC channel. Times are epoch milliseconds
 * (`performance.timeOrigin + performance.now()`), comparable across the
 * processes of one machine.
 */
import type { Priority } from '../src/transport/protocol.js';
import type { ModelInput } from './payload.js';
import type { PriorityMix } from './priorityMix.js';

export type Target =
  /** actorserve: binary msgpack frames over WebSocket; connections go round-robin over `urls`. */
  | { kind: 'ws'; urls: string[] }
  /** The plain server: JSON over HTTP/1.1 keep-alive (pipelined in open loop). */
  | { kind: 'http'; host: string; port: number };

export type Mode =
  /** `concurrency` requests in flight; a new one is sent as each answer arrives. */
  | { kind: 'closed'; concurrency: number }
  /**
   * `rate` requests per second on a fixed schedule, sent whether or not
   * earlier ones were answered; latency counts from the scheduled time.
   */
  | {
      kind: 'open';
      rate: number;
      /**
       * Each request carries a `priority` from this mix (in the fixed order of
       * `priorityPicker`, so the mix is exact over the run), and the report
       * gains {@link GeneratorReport.byPriority} and {@link GeneratorReport.overloaded}.
       * Left out: no `priority` field is sent (the server reads `normal`).
       */
      mix?: PriorityMix;
    };

export interface LoadSpec {
  target: Target;
  input: ModelInput;
  mode: Mode;
  /** Connections this generator opens (closed loop over HTTP: one per request in flight). */
  connections: number;
  warmupS: number;
  /** Measured seconds; the bench may end the run earlier with a `stop` message. */
  durationS: number;
  /** Open loop: this generator's schedule is shifted by this much, so several generators interleave rather than burst together. */
  scheduleOffsetMs: number;
  /** After the measured window, how long to wait for answers still outstanding. */
  drainTimeoutMs: number;
}

export type ToGenerator =
  | { t: 'run'; spec: LoadSpec }
  /** Start sending at `startAt` (epoch ms): every generator of a phase starts together. */
  | { t: 'go'; startAt: number }
  /** End the measured window now (or end the warm-up and the run, if still warming up). */
  | { t: 'stop' };

export interface GeneratorReport {
  sent: number;
  /** Results of requests sent (or scheduled) inside the measured window. */
  ok: number;
  /** Results that arrived inside the measured window, whenever sent: the throughput count. */
  okCompletedInWindow: number;
  /** Results that arrived from the start of the measured window to the end of the drain: the CPU-per-request count. */
  okFromWindowStart: number;
  errors: Record<string, number>;
  /** Measured requests still unanswered when the drain timed out; recorded in the histogram at their lower bound. */
  unanswered: number;
  /** Latency of measured results, µs, HDR compressed base64. */
  histogram: string;
  measureFrom: number;
  measureTo: number;
  /** Results and errors per 1 s bucket from `startAt`, the whole run (warm-up and drain included). */
  timeline: { startAt: number; bucketMs: number; ok: number[]; errors: number[] };
  /** Results of the measured window by the node that ran them (actorserve's `node` field). */
  perNode: Record<string, number>;
  /** Measured results run by another node than the one the connection is attached to. */
  forwarded: number;
  batchSizeSum: number;
  /** The generator's own CPU time during the measured window, and its event-loop delay max. */
  cpuSeconds: number;
  loopMaxMs: number;
  /** Open loop: how late each measured request left against its schedule (0 when sent ahead): the generator's waits for a core. */
  sendLateHistogram?: string;
  /** Open loop with a priority mix only: the measured requests of each priority present in the mix. */
  byPriority?: Partial<Record<Priority, PriorityReport>>;
  /** Open loop with a priority mix only: the `overloaded` answers to measured requests. */
  overloaded?: OverloadedReport;
  /**
   * Open loop with a priority mix only: the most bytes any connection held
   * unsent right after a send, over the whole run. Large means requests waited
   * in this client for the server to read them (counted in their latency).
   */
  sendBufferMaxBytes?: number;
}

/** One priority's share of a generator's measured window. */
export interface PriorityReport {
  /** Requests scheduled inside the measured window (sent or refused by the client's own backlog cap). */
  scheduled: number;
  /** Results of those requests. */
  ok: number;
  /** Results of this priority that arrived inside the measured window, whenever sent. */
  okCompletedInWindow: number;
  /** Error answers to those requests by code (plus `client_backlog`). */
  errors: Record<string, number>;
  unanswered: number;
  /** Latency of the results (not of errors), µs, HDR compressed base64; unanswered ones at their lower bound. */
  histogram: string;
  /** The server's own `timings.totalMs` of the same results (receipt to result), µs, HDR compressed base64. */
  serverHistogram: string;
}

export interface OverloadedReport {
  /** `overloaded` answers to requests scheduled inside the window. */
  count: number;
  /** Time from the scheduled send to the `overloaded` answer, µs, HDR compressed base64. */
  histogram: string;
  /** `overloaded` answers that carried no usable `retryAfterMs` (a non-negative number). */
  missingRetryAfter: number;
  /** Answers by message (the server's reason) with every number written N, at most 16 distinct plus "(other)". */
  reasons: Record<string, number>;
  /** The `retryAfterMs` hints that were there. */
  retryAfterMs: { count: number; sum: number; min: number; max: number };
}

export type FromGenerator =
  | { t: 'ready' }
  /** First result ever seen from `node` (epoch ms). */
  | { t: 'node'; node: string; at: number }
  | { t: 'done'; report: GeneratorReport }
  | { t: 'failed'; message: string };
