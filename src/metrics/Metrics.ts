/**
 * The node's Prometheus metrics, one registry per node (several nodes can
 * share a process in tests). Label children are cached per model so the
 * request path pays a map lookup and an add, nothing more.
 */
import { performance } from 'node:perf_hooks';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ShedReason } from '../actors/BatcherLogic.js';
import type { Priority } from '../transport/protocol.js';
import type { CertificateInfo } from '../transport/Tls.js';

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

export type Link = 'client' | 'peer';

/** Rendering /metrics runs at most about this long before it lets the event loop take a turn. */
export const RENDER_SLICE_MS = 0.25;

/** State read at scrape time, so gauges cost nothing on the request path. */
export interface MetricSources {
  queues(): Record<string, { queued: number; running: number }>;
  memberStatuses(): string[];
  queuedBytes(): number;
  /** Client WebSocket connections open on this node. */
  clientConnections(): number;
  /** Bytes of results written to this node's clients and not yet taken by their sockets. */
  clientUnreadBytes(): number;
  /** Bytes of client frames and HTTP bodies received and not yet complete. */
  clientReceivingBytes(): number;
  /** Bytes the tensor arena has allocated, and of them lent to requests now. */
  arenaBytes?(): number;
  arenaLentBytes?(): number;
  /** The certificate the node serves, when it serves TLS. */
  certificate?(): CertificateInfo | undefined;
}

/** Why a request was answered `overloaded`: a batcher's reason, or its connection's in-flight limit (`in_flight`). */
export type ShedLabel = ShedReason | 'in_flight';

/** Why a client connection was refused at the upgrade (or, past a per-address socket cap, its socket dropped at accept). */
export type RefusedConnection = 'max_connections' | 'max_connections_per_address' | 'max_sockets_per_address' | 'leaving' | 'unauthorized';
/**
 * Why the node closed a client: it left more results unread than its own
 * watermark, or it held the most when all clients together passed the
 * node's budget for unread results or for frames still arriving, or the
 * token it authenticated with was revoked, or it answered no ping.
 */
export type ClosedConnection = 'slow_reader' | 'node_unread_budget' | 'node_receiving_budget' | 'token_revoked' | 'ping_timeout';

export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'actorserve_requests_total',
    help: 'Requests answered to this node\'s clients, by model, version and outcome code ("ok" for a result).',
    labelNames: ['model', 'version', 'code'] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'actorserve_request_duration_seconds',
    help: 'Time from receiving a request to sending its result, at the origin node.',
    labelNames: ['model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly queueTime = new Histogram({
    name: 'actorserve_queue_duration_seconds',
    help: 'Time requests waited in the batcher queue of the node that ran them.',
    labelNames: ['model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly inferTime = new Histogram({
    name: 'actorserve_inference_duration_seconds',
    help: 'onnxruntime run time per batch.',
    labelNames: ['model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  private readonly batchSize = new Histogram({
    name: 'actorserve_batch_size',
    help: 'Requests per batch run.',
    labelNames: ['model'] as const,
    buckets: BATCH_BUCKETS,
    registers: [this.registry],
  });

  private readonly restarts = new Counter({
    name: 'actorserve_worker_restarts_total',
    help: 'Worker crashes followed by a restart, by model.',
    labelNames: ['model'] as const,
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'actorserve_link_bytes_total',
    help: 'Bytes of WebSocket payload on client and peer links.',
    labelNames: ['link', 'direction'] as const,
    registers: [this.registry],
  });
  private readonly rerun = new Histogram({
    name: 'actorserve_crash_rerun_seconds',
    help: 'Time from a worker crash until the requests of its batch run again.',
    labelNames: ['model'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [this.registry],
  });
  readonly duplicates = new Counter({
    name: 'actorserve_duplicate_replies_total',
    help: 'Late or repeated replies dropped by the origin (first terminal reply wins).',
    registers: [this.registry],
  });

  private readonly shedRequests = new Counter({
    name: 'actorserve_requests_shed_total',
    help: 'Requests this node answered overloaded, by model, priority and reason. Refused on arrival: queue_delay (expected queue wait past --max-queue-delay-ms), queue_full (--max-queue), memory_budget (--max-queued-bytes), soft_limit (low priority past the soft limit), fair_share (the connection or HTTP caller holds its share of the queue), in_flight (the connection holds --max-in-flight). Dropped once queued: displaced (for higher-priority work), low_waited (low priority past its shedding time). Counted where the decision is made, which for a forwarded request is the node that serves its model.',
    labelNames: ['model', 'priority', 'reason'] as const,
    registers: [this.registry],
  });
  /** Label children of {@link shedRequests} by model, priority and reason: the refusal path pays a map lookup. */
  private readonly shedChildren = new Map<string, Counter.Internal>();

  private readonly refusedConnections = new Counter({
    name: 'actorserve_client_connections_refused_total',
    help: 'Client WebSocket upgrades refused, by reason (max_connections: the node holds --max-connections; max_connections_per_address: the caller\'s address holds --max-connections-per-address; leaving; unauthorized), and TCP connections dropped at accept (max_sockets_per_address: the caller\'s address holds --max-sockets-per-address).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly closedConnections = new Counter({
    name: 'actorserve_client_connections_closed_total',
    help: 'Clients the node closed, by reason (to bound its memory: slow_reader, --max-buffered-bytes; node_unread_budget, --max-buffered-total-bytes; node_receiving_budget, --max-receiving-bytes. token_revoked: its token left the client tokens when they were reloaded; ping_timeout: it answered no ping within --client-ping-ms).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  private readonly perModel = new Map<string, { latency: Histogram.Internal<string>; queue: Histogram.Internal<string>; infer: Histogram.Internal<string>; batch: Histogram.Internal<string> }>();
  private readonly bytesIn: Record<Link, Counter.Internal>;
  private readonly bytesOut: Record<Link, Counter.Internal>;

  constructor(defaultLabels: Record<string, string> = {}, sources?: MetricSources) {
    this.registry.setDefaultLabels(defaultLabels);
    if (sources) {
      /** A gauge by one label, refilled at scrape time with the (label value, number) pairs `read` gives. */
      const byLabel = (name: string, help: string, label: string, read: () => Iterable<readonly [string, number]>) =>
        new Gauge({
          name,
          help,
          labelNames: [label],
          registers: [this.registry],
          collect() {
            this.reset();
            for (const [value, n] of read()) this.set({ [label]: value }, n);
          },
        });
      const perModel = (name: string, help: string, pick: (q: { queued: number; running: number }) => number) =>
        byLabel(name, help, 'model', () => Object.entries(sources.queues()).map(([model, q]) => [model, pick(q)] as const));
      perModel('actorserve_queue_depth', 'Requests waiting in the model\'s batcher queue on this node.', (q) => q.queued);
      perModel('actorserve_in_flight', 'Requests running on this node\'s workers, by model.', (q) => q.running);
      /** A gauge of one number, read at scrape time. */
      const scalar = (name: string, help: string, read: () => number) =>
        new Gauge({
          name,
          help,
          registers: [this.registry],
          collect() {
            this.set(read());
          },
        });
      scalar('actorserve_queued_bytes', 'Bytes of request tensors queued or running on this node (bounded by the memory budget).', sources.queuedBytes);
      scalar('actorserve_client_connections', 'Client WebSocket connections open on this node (bounded by --max-connections).', sources.clientConnections);
      scalar(
        'actorserve_client_unread_bytes',
        'Bytes of results this node holds for its clients, written but not yet taken by their sockets (bounded by --max-buffered-total-bytes).',
        sources.clientUnreadBytes,
      );
      scalar(
        'actorserve_client_receiving_bytes',
        'Bytes of client frames and HTTP request bodies this node has received and that are not yet complete (bounded by --max-receiving-bytes).',
        sources.clientReceivingBytes,
      );
      if (sources.arenaBytes && sources.arenaLentBytes) {
        scalar('actorserve_tensor_arena_bytes', 'Bytes the tensor arena holds for queued request tensors (allocated as needed, kept; at most --tensor-arena-bytes).', sources.arenaBytes);
        scalar('actorserve_tensor_arena_lent_bytes', 'Bytes of the tensor arena holding the tensors of requests queued or running now.', sources.arenaLentBytes);
      }
      if (sources.certificate) {
        const certificate = sources.certificate;
        byLabel(
          'actorserve_tls_certificate_expiry_seconds',
          'When the certificate this node serves expires, Unix time in seconds, by its SHA-256 fingerprint (changes when SIGHUP brings a renewed one).',
          'fingerprint',
          () => {
            const c = certificate();
            return c ? [[c.fingerprint256, c.expiresAt] as const] : [];
          },
        );
      }
      byLabel('actorserve_cluster_members', 'Cluster members (this node included) as this node sees them, by status.', 'status', () => {
        const counts = new Map<string, number>();
        for (const s of sources.memberStatuses()) counts.set(s, (counts.get(s) ?? 0) + 1);
        return counts;
      });
    }
    // Sampled every 2 ms: the gauges read delay + ~2 ms (at prom-client's default of 10 ms, a 10 ms
    // floor hid whether the loop met a 20 ms bound); 500 timer wakeups a second cost next to nothing.
    collectDefaultMetrics({ register: this.registry, eventLoopMonitoringPrecision: 2 });
    this.bytesIn = { client: this.bytes.labels('client', 'in'), peer: this.bytes.labels('peer', 'in') };
    this.bytesOut = { client: this.bytes.labels('client', 'out'), peer: this.bytes.labels('peer', 'out') };
  }

  private model(m: string) {
    let c = this.perModel.get(m);
    if (!c) {
      c = { latency: this.latency.labels(m), queue: this.queueTime.labels(m), infer: this.inferTime.labels(m), batch: this.batchSize.labels(m) };
      this.perModel.set(m, c);
    }
    return c;
  }

  /** A terminal reply sent to one of this node's clients. */
  answered(model: string, version: string, code: string, totalMs?: number): void {
    this.requests.labels(model, version, code).inc();
    if (totalMs !== undefined) this.model(model).latency.observe(totalMs / 1000);
  }

  batchRan(model: string, size: number, inferMs: number, queueMs: readonly number[]): void {
    const c = this.model(model);
    c.batch.observe(size);
    c.infer.observe(inferMs / 1000);
    for (const q of queueMs) c.queue.observe(q / 1000);
  }

  rerunAfterCrash(model: string, ms: number): void {
    this.rerun.labels(model).observe(ms / 1000);
  }

  workerRestarted(model: string): void {
    this.restarts.labels(model).inc();
  }

  /** A request answered `overloaded` here (a model this node does not serve is counted under ""). */
  shed(model: string, priority: Priority, reason: ShedLabel): void {
    const k = `${model}\0${priority}\0${reason}`;
    let c = this.shedChildren.get(k);
    if (!c) this.shedChildren.set(k, (c = this.shedRequests.labels(model, priority, reason)));
    c.inc();
  }

  connectionRefused(reason: RefusedConnection): void {
    this.refusedConnections.labels(reason).inc();
  }

  connectionClosed(reason: ClosedConnection): void {
    this.closedConnections.labels(reason).inc();
  }

  bytesReceived(link: Link, n: number): void {
    this.bytesIn[link].inc(n);
  }

  bytesSent(link: Link, n: number): void {
    this.bytesOut[link].inc(n);
  }

  /**
   * The Prometheus text page, as `registry.metrics()` renders it, but read a
   * metric at a time, with a turn of the event loop whenever
   * {@link RENDER_SLICE_MS} of rendering has run. Rendered whole, the page
   * held the loop 1.9 ms at p50 (p90 3.0, max 6.5) in the bench's overload
   * phase, which scrapes every 500 ms, and every frame that arrived meanwhile
   * waited, refusals included. Sliced, the longest hold is one metric: the
   * event-loop delay gauges, ~0.5 ms (a pass over a histogram per statistic).
   * A slow page costs the scraper time, not the clients.
   */
  async text(sliceMs = RENDER_SLICE_MS): Promise<string> {
    const parts: string[] = [];
    let sliceFrom = performance.now();
    for (const metric of this.registry.getMetricsAsArray()) {
      if (performance.now() - sliceFrom >= sliceMs) {
        await nextTurn();
        sliceFrom = performance.now();
      }
      parts.push(await this.registry.getSingleMetricAsString(metric.name));
    }
    return `${parts.join('\n\n')}\n`;
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
