/**
 * The peer link protocol (`ws://HOST:PORT/cluster`): a mutually
 * authenticated handshake, then frames that each carry one or more
 * envelopes `{to, from, msg}` addressed by actor path.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { ErrorFrame, Priority, RequestId, ResultFrame, WireTensor } from './protocol.js';

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

export interface Envelope {
  /** Actor path on the receiving node (`router`, `gateway`, `membership`). */
  to: string;
  /** Sending node id. */
  from: string;
  msg: PeerMsg;
}
