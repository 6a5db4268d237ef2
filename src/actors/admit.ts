/**
 * Turns a checked `infer` frame into a ledger entry: model and version
 * lookup, tensor validation, deadline on the monotonic clock. Shared by every
 * entry point (WebSocket sessions, the HTTP API) so they accept and refuse
 * exactly the same requests.
 */
import type { Ref } from 'nact';
import { performance } from 'node:perf_hooks';
import { modelNotFound } from '../errors.js';
import type { ModelSpec } from '../models/registry.js';
import { validateInputs } from '../models/validate.js';
import type { InferFrame, WireTensor } from '../transport/protocol.js';
import type { InferRequest, SessionMsg } from './messages.js';

/** The connection a request key belongs to: the key without its sequence number. */
export const ownerOf = (key: string) => key.slice(0, key.lastIndexOf('/'));

/** @throws ActorserveError `model_not_found` or `invalid_request`. */
export function admit(models: ReadonlyMap<string, ModelSpec>, f: InferFrame, key: string, replyTo: Ref<SessionMsg>): InferRequest {
  const spec = models.get(f.model);
  if (!spec) throw modelNotFound(`model ${JSON.stringify(f.model)} is not served`);
  if (f.version !== undefined && f.version !== spec.version) {
    throw modelNotFound(`model ${f.model} has no version ${JSON.stringify(f.version)} (serving ${spec.version})`);
  }
  const shape = validateInputs(spec, f.inputs);
  const receivedAt = performance.now();
  let bytes = 0;
  for (const t of Object.values(f.inputs)) bytes += t.data.byteLength;
  return {
    key,
    id: f.id,
    spec,
    inputs: f.inputs as Record<string, WireTensor>,
    rows: shape.rows,
    bucket: shape.bucket,
    priority: f.priority ?? 'normal',
    deadline: f.deadlineMs === undefined ? Infinity : receivedAt + f.deadlineMs,
    enqueuedAt: receivedAt,
    receivedAt,
    attempts: 0,
    isolate: false,
    seq: 0,
    replyTo,
    routeKey: f.key,
    bytes,
    owner: ownerOf(key),
  };
}
