/** What the node's HTTP features (the Open Inference Protocol API, the dashboard) may use. */
import type { IncomingMessage } from 'node:http';
import type { MemberView } from '../../actors/Membership.js';
import type { Metrics } from '../../metrics/Metrics.js';
import type { ModelSpec } from '../../models/registry.js';
import type { ErrorFrame, InferFrame, ResultFrame } from '../protocol.js';

/** Who sent an HTTP request. */
export interface HttpCaller {
  /**
   * The caller's remote address: under pressure each address (an IPv6 one by its /64) holds at most
   * its share of a model's queue, as one WebSocket connection does.
   */
  address?: string | undefined;
  /** Aborted when the caller goes away before its answer: a request still queued is cancelled. */
  gone?: AbortSignal;
}

export interface NodeContext {
  nodeId: string;
  /** Models this node serves. */
  models: readonly ModelSpec[];
  isReady(): boolean;
  /** A model is ready here: at least one worker has loaded it. */
  modelReady(name: string): boolean;
  /** One request through the router, batchers and ledger; resolves with its one terminal reply. */
  submit(f: InferFrame, caller?: HttpCaller): Promise<ResultFrame | ErrorFrame>;
  /** The address an HTTP caller is counted by: its socket's, or behind a trusted proxy the one it forwarded. */
  clientAddress?(req: IncomingMessage): string;
  clusterView(): MemberView[];
  queueStats(): Record<string, { queued: number; running: number }>;
  metrics: Metrics;
  /** Largest request body accepted, in bytes. */
  maxBodyBytes: number;
  /** Request bodies being read and the bytes each holds so far, kept up to date by readBody (the node bounds their sum). */
  bodiesReading?: Map<IncomingMessage, number>;
}
