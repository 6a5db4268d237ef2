/**
 * The peer link protocol (`ws://HOST:PORT/cluster`): a mutually
 * authenticated handshake, then frames that each carry one or more
 * envelopes `{to, from, msg}` addressed by actor path.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ERROR_CODES } from '../errors.js';
import { LIMITS, PRIORITIES, RequestId, WireTensor, type ErrorFrame, type Priority, type ResultFrame } from './protocol.js';

export const PEER_PROTOCOL_VERSION = 1;

export type MemberStatus = 'joining' | 'up' | 'suspect' | 'leaving' | 'down';

/** What a node says about itself in the handshake and in gossip. */
export interface MemberInfo {
  nodeId: string;
  /** Start time in ms plus a random tiebreak: a restarted node always has a larger one. */
  incarnation: number;
  /** host:port where its peers and clients reach it. */
  addr: string;
  models: string[];
  /** The node's own state as it reports it. */
  state: 'joining' | 'up' | 'leaving';
}

const Str = (max: number) => Type.String({ minLength: 1, maxLength: max });
const MemberInfoSchema = Type.Object({
  nodeId: Str(64),
  incarnation: Type.Number({ minimum: 0 }),
  addr: Str(300),
  models: Type.Array(Str(128), { maxItems: 256 }),
  state: Type.Union([Type.Literal('joining'), Type.Literal('up'), Type.Literal('leaving')]),
});

export const ChallengeFrame = Type.Object({
  t: Type.Literal('challenge'),
  cluster: Str(128),
  nodeId: Str(64),
  incarnation: Type.Number(),
  nonce: Str(128),
});
export type ChallengeFrame = Static<typeof ChallengeFrame>;

export const HelloFrame = Type.Object({
  t: Type.Literal('hello'),
  protocol: Type.Integer(),
  cluster: Str(128),
  member: MemberInfoSchema,
  nonce: Str(128),
  proof: Str(128),
});
export type HelloFrame = Static<typeof HelloFrame>;

export const AcceptFrame = Type.Object({ t: Type.Literal('accept'), proof: Str(128) });
export type AcceptFrame = Static<typeof AcceptFrame>;

export const checkChallenge = TypeCompiler.Compile(ChallengeFrame);
export const checkHello = TypeCompiler.Compile(HelloFrame);
export const checkAccept = TypeCompiler.Compile(AcceptFrame);

export const newNonce = () => randomBytes(24).toString('hex');

/**
 * HMAC-SHA256 with the cluster secret over the other side's fresh nonce and
 * who is talking to whom, so a proof is good for one handshake only.
 */
export function proof(secret: string, role: 'dialer' | 'listener', nonce: string, cluster: string, from: string, to: string): string {
  return createHmac('sha256', secret).update(`actorserve/peer/v1|${role}|${nonce}|${cluster}|${from}|${to}`).digest('hex');
}

export function proofMatches(expected: string, given: string): boolean {
  const a = Buffer.from(expected, 'hex');
  const b = Buffer.from(given, 'hex');
  return a.length === b.length && a.length > 0 && timingSafeEqual(a, b);
}

/** A request travelling to the node that will run it. Deadlines travel as time left, not wall-clock. */
export interface WireRequest {
  key: string;
  id: RequestId;
  model: string;
  version: string;
  inputs: Record<string, WireTensor>;
  rows: number;
  bucket: string;
  priority: Priority;
  /** ms left when sent; null when there is no deadline. */
  remainingMs: number | null;
  attempts: number;
}

export type PeerMsg =
  | { t: 'hb'; state: MemberInfo['state']; models?: string[]; view: MemberInfo[]; load: Record<string, number> }
  /** Tells an origin that the node holding its request handed it to `to`. */
  | { t: 'moved'; key: string; to: string }
  | { t: 'infer'; req: WireRequest }
  | { t: 'reply'; key: string; frame: ResultFrame | ErrorFrame }
  | { t: 'cancel'; model: string; key: string };

const isMap = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && Object.getPrototypeOf(x) === Object.prototype;
const AnyKey = Type.String({ pattern: '^[\\s\\S]*$' });
const Tensors = Type.Record(Type.String({ pattern: `^[\\s\\S]{0,${LIMITS.maxNameLength}}$` }), WireTensor, { maxProperties: LIMITS.maxInputs, additionalProperties: false });
const PeerMsgSchema = Type.Union([
  Type.Object({
    t: Type.Literal('hb'),
    state: MemberInfoSchema.properties.state,
    models: Type.Optional(Type.Array(Str(128), { maxItems: 256 })),
    view: Type.Array(MemberInfoSchema, { maxItems: 4096 }),
    load: Type.Record(AnyKey, Type.Number({ minimum: 0 }), { additionalProperties: false }),
  }),
  Type.Object({ t: Type.Literal('moved'), key: Str(512), to: Str(64) }),
  Type.Object({
    t: Type.Literal('infer'),
    req: Type.Object({
      key: Str(512),
      id: RequestId,
      model: Str(128),
      version: Str(32),
      inputs: Tensors,
      rows: Type.Integer({ minimum: 1 }),
      bucket: Type.String({ maxLength: 4096 }),
      priority: Type.Union(PRIORITIES.map((p) => Type.Literal(p))),
      remainingMs: Type.Union([Type.Number({ minimum: 0 }), Type.Null()]),
      attempts: Type.Integer({ minimum: 0 }),
    }),
  }),
  Type.Object({
    t: Type.Literal('reply'),
    key: Str(512),
    frame: Type.Union([
      Type.Object({
        t: Type.Literal('result'),
        id: RequestId,
        model: Type.String(),
        version: Type.String(),
        outputs: Type.Record(AnyKey, WireTensor, { additionalProperties: false }),
        node: Type.String(),
        worker: Type.String(),
        batchSize: Type.Integer({ minimum: 0 }),
        timings: Type.Object({ queueMs: Type.Number(), inferMs: Type.Number(), totalMs: Type.Number() }),
      }),
      Type.Object({
        t: Type.Literal('error'),
        id: Type.Union([RequestId, Type.Null()]),
        code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c))),
        message: Type.String(),
        retryAfterMs: Type.Optional(Type.Number({ minimum: 0 })),
      }),
    ]),
  }),
  Type.Object({ t: Type.Literal('cancel'), model: Str(128), key: Str(512) }),
]);
const checkPeerMsg = TypeCompiler.Compile(PeerMsgSchema);
/** Does not compile when PeerMsg gains a variant the schema above does not know (isPeerMsg would drop it). */
type KnownToSchema<T extends Static<typeof PeerMsgSchema>['t']> = T;
export type PeerMsgTag = KnownToSchema<PeerMsg['t']>;

/**
 * A peer message of a known shape. Peers are authenticated, not infallible:
 * a malformed message crashed the actor that read it (the router, a
 * session). Only plain maps go where records belong, since TypeBox lists
 * every own property of a record (a typed array: one string per element).
 */
export function isPeerMsg(msg: unknown): msg is PeerMsg {
  if (!isMap(msg)) return false;
  const req = msg['req'];
  const frame = msg['frame'];
  const records =
    msg['t'] === 'hb' ? [msg['load']] : msg['t'] === 'infer' && isMap(req) ? [req['inputs']] : msg['t'] === 'reply' && isMap(frame) && frame['t'] === 'result' ? [frame['outputs']] : [];
  if (!records.every((r) => isMap(r) && Object.values(r).every((v) => typeof v !== 'object' || isMap(v)))) return false;
  return checkPeerMsg.Check(msg);
}

export interface Envelope {
  /** Actor path on the receiving node (`router`, `gateway`, `membership`). */
  to: string;
  /** Sending node id. */
  from: string;
  msg: PeerMsg;
}
