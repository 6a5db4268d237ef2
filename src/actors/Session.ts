/**
 * One session actor per client connection: decodes and checks every frame,
 * enforces the connection's in-flight limit, keeps the outstanding table
 * (first terminal reply wins; late or duplicate replies are dropped and
 * counted) and writes replies to the socket.
 */
import { dispatch, spawn, stop, type Ref } from 'nact';
import type { WebSocket } from 'ws';
import { ActorserveError, CloseCode, invalidRequest, overloaded } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/Metrics.js';
import type { ModelSpec } from '../models/registry.js';
import { decodeUntrusted, encode } from '../transport/codec.js';
import { coalescingSender } from '../transport/coalesce.js';
import { parseClientFrame, type ErrorFrame, type InferFrame, type RequestId, type ResultFrame } from '../transport/protocol.js';
import { admit } from './admit.js';
import { errorFrame, type InferRequest, type RouterMsg, type SessionMsg } from './messages.js';

export interface SessionOptions {
  name: string;
  /** `node/incarnation/session`: makes request keys unique across the cluster and across restarts. */
  keyPrefix: string;
  ws: WebSocket;
  models: ReadonlyMap<string, ModelSpec>;
  router: Ref<RouterMsg>;
  maxInFlight: number;
  log: Logger;
  /** Counts replies dropped because their request was already answered. */
  onDuplicate?: () => void;
  metrics?: Metrics;
  /** Results buffered in the socket past this close the connection (a reader that stopped reading). */
  maxBufferedBytes: number;
  /** Told when this session closes its connection at {@link maxBufferedBytes}. */
  onSlowConsumer?: () => void;
  /** Told after each client frame is handled (inbound flow control). */
  onFrameHandled?: () => void;
  /** Told every change of this session's unanswered requests (+1 / -n), for draining. */
  onOutstanding?: (delta: number) => void;
}

interface Outstanding {
  key: string;
  model: string;
  version: string;
}

export function spawnSession(parent: Ref<unknown>, o: SessionOptions): Ref<SessionMsg> {
  const outstanding = new Map<RequestId, Outstanding>();
  let seq = 0;
  let self: Ref<SessionMsg>;
  const write = coalescingSender(o.ws);

  const send = (frame: ResultFrame | ErrorFrame) => {
    if (o.ws.readyState !== o.ws.OPEN) return;
    const bytes = encode(frame);
    o.metrics?.bytesSent('client', bytes.byteLength);
    write(bytes);
    if (o.ws.bufferedAmount > o.maxBufferedBytes) {
      // It stopped reading: holding more for it would cost everyone's memory. Its queued work is cancelled on close.
      o.log.warn({ bufferedBytes: o.ws.bufferedAmount, limit: o.maxBufferedBytes }, 'slow consumer closed at the high watermark');
      o.onSlowConsumer?.();
      o.ws.terminate();
    }
  };
  // A model this node does not serve is logged by name but counted under "" (clients choose names: unbounded labels).
  const label = (model: string) => (o.models.has(model) ? model : '');
  /** An error for a request that never entered the ledger. */
  const fail = (id: RequestId | null, e: ActorserveError, model = '', version = '') => {
    o.metrics?.answered(label(model), version, e.code);
    logAnswer(id, model, e.code, e.message);
    send(errorFrame(id, e));
  };
  /** Every line about a request carries its id and model (the node is bound on the logger). */
  const logAnswer = (id: RequestId | null, model: string, code: string, message: string) => {
    if (code === 'internal' || code === 'unavailable') o.log.warn({ reqId: id, model, code }, message);
    else o.log.debug({ reqId: id, model, code }, message);
  };

  const onInfer = (f: InferFrame) => {
    if (outstanding.has(f.id)) return fail(f.id, invalidRequest(`id ${JSON.stringify(f.id)} is already in flight on this connection`), f.model);
    if (outstanding.size >= o.maxInFlight) {
      o.metrics?.shed(label(f.model), f.priority ?? 'normal', 'in_flight');
      return fail(f.id, overloaded(`connection has ${o.maxInFlight} requests in flight`, 10), f.model);
    }
    let req: InferRequest;
    try {
      req = admit(o.models, f, `${o.keyPrefix}/${seq++}`, self);
    } catch (e) {
      if (!ActorserveError.is(e)) throw e;
      const spec = o.models.get(f.model);
      return fail(f.id, e, f.model, spec?.version);
    }
    const { key, spec } = req;
    outstanding.set(f.id, { key, model: spec.name, version: spec.version });
    o.onOutstanding?.(1);
    dispatch(o.router, { t: 'infer', req });
  };

  const onFrame = (data: Buffer) => {
    o.metrics?.bytesReceived('client', data.byteLength);
    let value: unknown;
    try {
      value = decodeUntrusted(data);
    } catch {
      o.log.info({ bytes: data.byteLength }, 'undecodable frame; closing');
      o.ws.close(CloseCode.invalidPayload, 'frame is not valid msgpack');
      return;
    }
    const parsed = parseClientFrame(value);
    if (!parsed.ok) return fail(parsed.id, invalidRequest(parsed.message));
    const f = parsed.frame;
    switch (f.t) {
      case 'infer':
        return onInfer(f);
      case 'hello':
        return; // already authenticated; a repeated hello changes nothing
      case 'cancel': {
        const entry = outstanding.get(f.id);
        if (!entry) return;
        outstanding.delete(f.id);
        o.onOutstanding?.(-1);
        dispatch(o.router, { t: 'cancel', model: entry.model, key: entry.key });
        return fail(f.id, new ActorserveError('cancelled', 'cancelled by the client'), entry.model, entry.version);
      }
    }
  };

  self = spawn(
    parent as Ref<never>,
    (s: null, msg: SessionMsg) => {
      switch (msg.t) {
        case 'frame':
          try {
            onFrame(msg.data);
          } finally {
            o.onFrameHandled?.();
          }
          return s;
        case 'reply': {
          const entry = outstanding.get(msg.frame.id as RequestId);
          if (entry?.key !== msg.key) {
            o.onDuplicate?.();
            return s;
          }
          outstanding.delete(msg.frame.id as RequestId);
          o.onOutstanding?.(-1);
          const f = msg.frame;
          if (f.t === 'result') {
            o.metrics?.answered(entry.model, entry.version, 'ok', f.timings.totalMs);
            if (o.log.isLevelEnabled('trace')) o.log.trace({ reqId: f.id, model: entry.model, worker: f.worker, totalMs: f.timings.totalMs }, 'result');
          } else {
            o.metrics?.answered(entry.model, entry.version, f.code);
            logAnswer(f.id, entry.model, f.code, f.message);
          }
          send(f);
          return s;
        }
        case 'closed':
          // The client is gone: its queued work is cancelled, not run for nobody.
          for (const entry of outstanding.values()) dispatch(o.router, { t: 'cancel', model: entry.model, key: entry.key });
          o.onOutstanding?.(-outstanding.size);
          outstanding.clear();
          stop(self);
          return s;
      }
    },
    o.name,
  );
  return self;
}
