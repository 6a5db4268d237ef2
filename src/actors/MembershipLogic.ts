/**
 * Membership as a transition function: what this node believes about every
 * other node, from handshakes, gossip, frames heard and links lost.
 *
 * A node's own state (joining, up, leaving) is authoritative only when it
 * comes from that node; reachability (suspect, down) is judged locally by
 * each observer's failure detector, so a healed partition converges as soon
 * as frames flow again. A larger incarnation replaces an older one: a
 * restarted node is a new member.
 */
import type { MemberInfo, MemberStatus } from '../transport/peerProtocol.js';
import { PhiAccrual, defaultPhiOptions, type PhiOptions } from './PhiAccrual.js';

export interface Member {
  info: MemberInfo;
  status: MemberStatus;
  detector: PhiAccrual;
  /** When it was last heard directly; undefined until the first frame. */
  heardAt: number | undefined;
  /** When it became down, for pruning. */
  downAt: number | undefined;
  /** When this incarnation was first learnt of. */
  learntAt: number;
}

export interface MembershipState {
  self: MemberInfo;
  members: Map<string, Member>;
  phi: PhiOptions;
  /** A down member is forgotten after this long. Default 60 s. */
  pruneAfterMs: number;
}

export type MembershipMsg =
  | { t: 'hello'; info: MemberInfo }
  | { t: 'heard'; nodeId: string; incarnation: number }
  | { t: 'gossip'; from: string; state: MemberInfo['state']; models?: string[] | undefined; view: MemberInfo[] }
  | { t: 'linkLost'; nodeId: string }
  | { t: 'selfState'; state: MemberInfo['state'] }
  | { t: 'selfModels'; models: string[] }
  | { t: 'tick' };

export type MembershipEffect =
  | { t: 'dial'; nodeId: string; addr: string }
  | { t: 'unreachable'; nodeId: string; status: 'suspect' | 'down' }
  | { t: 'changed' };

export function initialMembership(self: MemberInfo, phi: PhiOptions = defaultPhiOptions, pruneAfterMs = 60_000): MembershipState {
  return { self, members: new Map(), phi, pruneAfterMs };
}

export function membershipTransition(s: MembershipState, msg: MembershipMsg, now: number): MembershipEffect[] {
  const fx: MembershipEffect[] = [];
  switch (msg.t) {
    case 'hello': {
      const m = learn(s, msg.info, now, fx);
      if (m) {
        m.info = { ...msg.info };
        hear(s, m, now, fx);
      }
      break;
    }
    case 'heard': {
      const m = s.members.get(msg.nodeId);
      if (m && m.info.incarnation === msg.incarnation) hear(s, m, now, fx);
      break;
    }
    case 'gossip': {
      const sender = s.members.get(msg.from);
      if (sender && sender.info.state !== msg.state) {
        sender.info = { ...sender.info, state: msg.state };
        if (sender.status !== 'suspect' && sender.status !== 'down') sender.status = msg.state;
        fx.push({ t: 'changed' });
      }
      // A node drops a model whose workers all gave up; only the node itself says so.
      if (sender && msg.models && msg.models.join() !== sender.info.models.join()) {
        sender.info = { ...sender.info, models: [...msg.models] };
        fx.push({ t: 'changed' });
      }
      for (const info of msg.view) if (info.nodeId !== msg.from) learn(s, info, now, fx);
      break;
    }
    case 'linkLost': {
      const m = s.members.get(msg.nodeId);
      if (m && (m.status === 'up' || m.status === 'joining' || m.status === 'leaving')) {
        m.status = 'suspect';
        fx.push({ t: 'unreachable', nodeId: msg.nodeId, status: 'suspect' }, { t: 'changed' });
      }
      break;
    }
    case 'selfModels':
      if (s.self.models.join() !== msg.models.join()) {
        s.self = { ...s.self, models: [...msg.models] };
        fx.push({ t: 'changed' });
      }
      break;
    case 'selfState':
      if (s.self.state !== msg.state) {
        s.self = { ...s.self, state: msg.state };
        fx.push({ t: 'changed' });
      }
      break;
    case 'tick':
      for (const [id, m] of s.members) {
        if (m.status === 'down') {
          if (now - m.downAt! > s.pruneAfterMs) {
            s.members.delete(id);
            fx.push({ t: 'changed' });
          }
          continue;
        }
        // Never heard directly: judged from when we learnt of it, so a ghost from gossip also goes down.
        if (m.heardAt !== undefined ? !m.detector.isAvailable(now) : now - m.learntAt > 3 * s.phi.acceptablePauseMs + 2_000) {
          m.status = 'down';
          m.downAt = now;
          fx.push({ t: 'unreachable', nodeId: id, status: 'down' }, { t: 'changed' });
        }
      }
      break;
  }
  return fx;
}

/** Members in a stable order, for gossip, routing and the admin view. */
export const memberList = (s: MembershipState): Member[] =>
  [...s.members.values()].sort((a, b) => (a.info.nodeId < b.info.nodeId ? -1 : 1));

/** Adds or replaces a member from a handshake or gossip; returns it, or undefined when the info is stale. */
function learn(s: MembershipState, info: MemberInfo, now: number, fx: MembershipEffect[]): Member | undefined {
  if (info.nodeId === s.self.nodeId) return undefined;
  const known = s.members.get(info.nodeId);
  if (known && known.info.incarnation > info.incarnation) return undefined;
  if (known && known.info.incarnation === info.incarnation) return known;
  const m: Member = {
    info: { ...info },
    status: 'joining',
    detector: new PhiAccrual(s.phi),
    heardAt: undefined,
    downAt: undefined,
    learntAt: now,
  };
  s.members.set(info.nodeId, m);
  fx.push({ t: 'dial', nodeId: info.nodeId, addr: info.addr }, { t: 'changed' });
  return m;
}

function hear(s: MembershipState, m: Member, now: number, fx: MembershipEffect[]): void {
  // The silence of an outage is not a sample of the peer's rhythm: start afresh.
  if (m.status === 'down' || m.status === 'suspect') m.detector = new PhiAccrual(s.phi);
  m.detector.heartbeat(now);
  m.heardAt = now;
  m.downAt = undefined;
  const status: MemberStatus = m.info.state;
  if (m.status !== status) {
    m.status = status;
    fx.push({ t: 'changed' });
  }
}
