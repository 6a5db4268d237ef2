/** Messages between the node's actors. Tagged unions on `t`. */
import type { Ref } from 'nact';
import type { ActorserveError } from '../errors.js';
import type { ModelSpec } from '../models/registry.js';
import type { ThreadTensor } from '../models/threadProtocol.js';
import type { ErrorFrame, RequestId, ResultFrame, WireTensor } from '../transport/protocol.js';
import type { MemberStatus, WireRequest } from '../transport/peerProtocol.js';
import type { Batch, QueueItem } from './BatcherLogic.js';

/** An accepted request inside the node: the ledger entry the batcher owns. */
export interface InferRequest extends QueueItem {
  readonly id: RequestId;
  readonly spec: ModelSpec;
  /** Views of the request's frame; while a batcher holds the request, of its node's tensor arena. */
  inputs: Record<string, WireTensor>;
  /** Arena chunks the request's tensors are in, while a batcher holds it (see tensorArena.ts). */
  held?: Uint8Array[] | undefined;
  /** performance.now() when the gateway received it. */
  readonly receivedAt: number;
  readonly replyTo: Ref<SessionMsg>;
  /** Consistent-hash routing key from the client, if any. */
  readonly routeKey?: string | undefined;
  /** Node id of the origin when the request came from a peer. */
  readonly origin?: string | undefined;
}

export type SessionMsg =
  | { t: 'frame'; data: Buffer }
  /** `key` names the request instance, so a late reply never answers a reused id. */
  | { t: 'reply'; key: string; frame: ResultFrame | ErrorFrame }
  | { t: 'closed' };

export type RouterMsg =
  | { t: 'infer'; req: InferRequest }
  | { t: 'cancel'; model: string; key: string }
  /** A request a peer sent us to run (or, while we leave, to pass on). */
  | { t: 'remoteInfer'; from: string; req: WireRequest }
  /** A reply a peer sent back for one of our sessions' requests. */
  | { t: 'remoteReply'; from: string; key: string; frame: ResultFrame | ErrorFrame }
  | { t: 'remoteCancel'; from: string; model: string; key: string }
  | { t: 'view'; members: RouteMember[]; self: RouteMember }
  /** A node may be gone: what we sent it goes elsewhere now. */
  | { t: 'nodeLost'; nodeId: string }
  /** A local batcher cannot run this (its workers gave up, or the node leaves): move it to another node. */
  | { t: 'handoff'; req: InferRequest; canRunHere: boolean }
  /** A peer moved one of our requests to another node. */
  | { t: 'moved'; key: string; to: string };

/** A node as the router sees it: membership status plus link state and load. */
export interface RouteMember {
  nodeId: string;
  incarnation: number;
  state: MemberStatus;
  models: string[];
  /** Our outbound link to it is open (always true for ourselves). */
  linked: boolean;
  /** Queued plus running requests per model, as the node last reported. */
  load: Record<string, number>;
}

export type BatcherActorMsg =
  | { t: 'enqueue'; req: InferRequest }
  | { t: 'cancel'; key: string }
  | { t: 'workerReady'; worker: string }
  | { t: 'batchDone'; worker: string; batchId: number; inferMs: number; next?: number; outputs: Record<string, ThreadTensor> }
  | { t: 'workerCrashed'; worker: string; error: string; innocent?: boolean }
  | { t: 'workerStopped'; worker: string; error: string; innocent?: boolean }
  | { t: 'tick' }
  | { t: 'drain' }
  | { t: 'stats'; replyTo: Ref<BatcherStats> };

export interface BatcherStats {
  queued: number;
  running: number;
  workers: Record<string, string>;
}

export type WorkerMsg =
  | { t: 'started'; generation: number }
  | { t: 'startFailed'; generation: number; error: string }
  | { t: 'threadDied'; generation: number; error: string }
  /** A run of this thread threw, or the thread died under it. */
  | { t: 'runFailed'; generation: number; error: string }
  | { t: 'run'; batch: Batch<InferRequest> };

export const errorFrame = (id: RequestId | null, e: ActorserveError): ErrorFrame => ({
  t: 'error',
  id,
  code: e.code,
  message: e.message,
  ...(e.retryAfterMs !== undefined ? { retryAfterMs: e.retryAfterMs } : {}),
});
