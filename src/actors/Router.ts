/**
 * Decides where each accepted request runs, and keeps the origin's side of
 * the ledger for work sent to other nodes. The policy (power of two choices,
 * bounded-load consistent hashing) lives in routing.ts; this actor owns the
 * machinery: the live view, sends over peer links, re-routing what was sent
 * to a node that is lost, and passing replies back to sessions.
 */
import { dispatch, spawn, type Ref } from 'nact';
import { performance } from 'node:perf_hooks';
import { ActorserveError, modelNotFound, unavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { ModelSpec } from '../models/registry.js';
import { validateInputs } from '../models/validate.js';
import type { PeerMsg, WireRequest } from '../transport/peerProtocol.js';
import { errorFrame, type BatcherActorMsg, type InferRequest, type RouteMember, type RouterMsg, type SessionMsg } from './messages.js';
import { ownerOf } from './admit.js';
import { eligible, powerOfTwoChoices, routeKeyed, type RouteCandidate } from './routing.js';

export interface RouterOptions {
  nodeId: string;
  batchers: ReadonlyMap<string, Ref<BatcherActorMsg>>;
  specs: ReadonlyMap<string, ModelSpec>;
  /** Live load of the local batchers (queued + running), by model. */
  localLoad: ReadonlyMap<string, number>;
  /** Ready (started, not stopped) workers per local model; none ready sends work elsewhere while others can take it. */
  localReady?: ReadonlyMap<string, number>;
  /** Sends to a peer's router; false when the link is not open. */
  send: (nodeId: string, msg: PeerMsg) => boolean;
  /** Where replies for requests that came from peers go. */
  outbox: Ref<SessionMsg>;
  /** Local sessions by name, for replies that come back from peers. */
  sessions: ReadonlyMap<string, Ref<SessionMsg>>;
  /** ε of bounded-load hashing. Default 0.25. */
  epsilon?: number;
  log: Logger;
}

interface Sent {
  req: InferRequest;
  node: string;
}

/** `origin/incarnation/session/seq`: the session is the third part. */
const sessionOf = (key: string) => key.split('/')[2] ?? '';

export function spawnRouter(parent: Ref<unknown>, o: RouterOptions): Ref<RouterMsg> {
  const log = o.log.child({ actor: 'router' });
  let members: RouteMember[] = [];
  let self: RouteMember = { nodeId: o.nodeId, incarnation: 0, state: 'up', models: [...o.specs.keys()], linked: true, load: {} };
  const sent = new Map<string, Sent>();
  const sentTo = new Map<string, number>();

  // A peer's reported load already includes what we sent it (up to a heartbeat ago): take the larger
  // of the two rather than their sum, or every peer looks busier than it is and work sticks here.
  // Locally, a model with no ready worker (restarting, hung) counts as fully loaded.
  const loadOf = (model: string) => (nodeId: string) =>
    nodeId === o.nodeId
      ? (o.localReady?.get(model) ?? 1) > 0 ? o.localLoad.get(model) ?? 0 : Number.MAX_SAFE_INTEGER
      : Math.max(members.find((m) => m.nodeId === nodeId)?.load[model] ?? 0, sentTo.get(nodeId) ?? 0);

  // The routing view changes only with membership: build it once per change, not per request. The same
  // array also lets routeKeyed find its cached ring by identity instead of re-deriving the eligible set.
  let fullView: RouteCandidate[] | undefined;
  const candidates = (exclude: ReadonlySet<string>): RouteCandidate[] => {
    if (exclude.size === 0 && fullView) return fullView;
    const view: RouteCandidate[] = [];
    if (!exclude.has(o.nodeId)) view.push({ nodeId: o.nodeId, state: self.state === 'up' ? 'up' : self.state, models: self.models });
    for (const m of members) {
      if (!exclude.has(m.nodeId)) view.push({ nodeId: m.nodeId, state: m.linked ? m.state : 'suspect', models: m.models });
    }
    if (exclude.size === 0) fullView = view;
    return view;
  };

  const answer = (req: InferRequest, e: ActorserveError) =>
    dispatch(req.replyTo, { t: 'reply', key: req.key, frame: errorFrame(req.id, e) });

  const runLocally = (req: InferRequest) => {
    const batcher = o.batchers.get(req.spec.name);
    if (batcher) dispatch(batcher, { t: 'enqueue', req });
    else answer(req, modelNotFound(`model ${req.spec.name} is not served on ${o.nodeId}`));
  };

  /**
   * Picks a node and hands the request over; a failed send tries the next
   * choice at once. `fallbackHere`: when no other node can take it, run it here.
   */
  const route = (req: InferRequest, exclude: Set<string> = new Set(), fallbackHere = !exclude.has(o.nodeId)) => {
    for (;;) {
      const view = candidates(exclude);
      const model = req.spec.name;
      const load = loadOf(model);
      const target = req.routeKey !== undefined
        ? routeKeyed(view, model, req.routeKey, load, o.epsilon ?? 0.25)
        : powerOfTwoChoices(eligible(view, model), load, o.nodeId, Math.random);
      if (target === undefined) {
        // No node is up for it; while we still hold the model ourselves (joining, leaving), run it here.
        if (o.batchers.has(model) && fallbackHere) return runLocally(req);
        return answer(req, o.specs.has(model) || members.some((m) => m.models.includes(model))
          ? unavailable(`no node serving ${model} is reachable`)
          : modelNotFound(`model ${model} is not served in this cluster`));
      }
      if (target === o.nodeId) return runLocally(req);
      if (o.send(target, { t: 'infer', req: toWire(req) })) {
        sent.set(req.key, { req, node: target });
        sentTo.set(target, (sentTo.get(target) ?? 0) + 1);
        return;
      }
      exclude.add(target);
    }
  };

  /** Moves work off this node; a remote origin learns where it went, so a later loss of that node re-routes it. */
  const handoff = (req: InferRequest, canRunHere: boolean) => {
    route(req, new Set([o.nodeId]), canRunHere);
    if (req.origin === undefined) return;
    const moved = settle(req.key);
    if (moved) o.send(req.origin, { t: 'moved', key: req.key, to: moved.node });
  };

  const settle = (key: string): Sent | undefined => {
    const s = sent.get(key);
    if (!s) return undefined;
    sent.delete(key);
    sentTo.set(s.node, Math.max(0, (sentTo.get(s.node) ?? 1) - 1));
    return s;
  };

  return spawn(
    parent as Ref<never>,
    (st: null, msg: RouterMsg) => {
      switch (msg.t) {
        case 'infer':
          route(msg.req);
          return st;
        case 'cancel': {
          const s = settle(msg.key);
          if (s) o.send(s.node, { t: 'cancel', model: msg.model, key: msg.key });
          else {
            const batcher = o.batchers.get(msg.model);
            if (batcher) dispatch(batcher, { t: 'cancel', key: msg.key });
          }
          return st;
        }
        case 'remoteInfer': {
          const spec = o.specs.get(msg.req.model);
          let req: InferRequest | undefined;
          try {
            req = fromWire(msg.req, spec, msg.from, o.outbox);
          } catch (e) {
            if (!ActorserveError.is(e)) throw e;
            o.send(msg.from, { t: 'reply', key: msg.req.key, frame: errorFrame(msg.req.id, e) });
            return st;
          }
          if (!req) {
            o.send(msg.from, { t: 'reply', key: msg.req.key, frame: errorFrame(msg.req.id, modelNotFound(`model ${msg.req.model} is not served on ${o.nodeId}`)) });
            return st;
          }
          // While leaving we pass new work on rather than start it; run it only if nobody else can.
          if (self.state === 'leaving') handoff(req, true);
          else runLocally(req);
          return st;
        }
        case 'remoteReply': {
          const s = settle(msg.key);
          const session = o.sessions.get(sessionOf(msg.key));
          // A reply for work we no longer track may still be the first answer (we re-routed, the original won).
          if (session) dispatch(session, { t: 'reply', key: msg.key, frame: msg.frame });
          else if (s) log.debug({ key: msg.key }, 'reply for a closed session dropped');
          return st;
        }
        case 'remoteCancel': {
          const batcher = o.batchers.get(msg.model);
          if (batcher) dispatch(batcher, { t: 'cancel', key: msg.key });
          return st;
        }
        case 'view':
          members = msg.members;
          self = msg.self;
          fullView = undefined;
          return st;
        case 'handoff':
          handoff(msg.req, msg.canRunHere);
          return st;
        case 'moved': {
          const s = sent.get(msg.key);
          if (s) {
            sentTo.set(s.node, Math.max(0, (sentTo.get(s.node) ?? 1) - 1));
            s.node = msg.to;
            sentTo.set(msg.to, (sentTo.get(msg.to) ?? 0) + 1);
            // Moved to a node we already count as lost: its reply cannot reach us, and its nodeLost has
            // come and gone (a heal before it is marked down brings none), so nothing would re-route it.
            const to = members.find((m) => m.nodeId === msg.to);
            if (msg.to !== o.nodeId && (!to || to.state === 'suspect' || to.state === 'down')) {
              settle(msg.key);
              route(s.req, new Set([msg.to]));
            }
          }
          return st;
        }
        case 'nodeLost': {
          const moving = [...sent.values()].filter((s) => s.node === msg.nodeId);
          if (moving.length > 0) log.info({ peer: msg.nodeId, requests: moving.length }, 're-routing work sent to a lost node');
          for (const s of moving) {
            settle(s.req.key);
            route(s.req, new Set([msg.nodeId]));
          }
          return st;
        }
      }
    },
    'router',
  );
}

function toWire(req: InferRequest): WireRequest {
  return {
    key: req.key,
    id: req.id,
    model: req.spec.name,
    version: req.spec.version,
    inputs: req.inputs,
    rows: req.rows,
    bucket: req.bucket,
    priority: req.priority,
    remainingMs: Number.isFinite(req.deadline) ? Math.max(0, req.deadline - performance.now()) : null,
    attempts: req.attempts,
  };
}

function fromWire(w: WireRequest, spec: ModelSpec | undefined, origin: string, outbox: Ref<SessionMsg>): InferRequest | undefined {
  if (!spec || spec.version !== w.version) return undefined;
  // Rows and bucket from the tensors, not the peer's word: a batch built on wrong ones misaligns every request in it.
  const { rows, bucket } = validateInputs(spec, w.inputs);
  const now = performance.now();
  return {
    key: w.key,
    id: w.id,
    spec,
    inputs: w.inputs,
    rows,
    bucket,
    priority: w.priority,
    deadline: w.remainingMs === null ? Infinity : now + w.remainingMs,
    enqueuedAt: now,
    receivedAt: now,
    attempts: w.attempts,
    isolate: false,
    seq: 0,
    replyTo: outbox,
    origin,
    bytes: Object.values(w.inputs).reduce((n, t) => n + (t.data?.byteLength ?? 0), 0),
    owner: ownerOf(w.key),
  };
}

