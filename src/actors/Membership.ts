/**
 * The membership shell: peer links out, the handshake on links in,
 * heartbeats with gossip, the failure detector's clock. It feeds
 * MembershipLogic and turns its effects into dials, router updates and
 * re-routing.
 */
import type { IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { WebSocket } from 'ws';
import { CloseCode } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/Metrics.js';
import { encode } from '../transport/codec.js';
import { decodePeer } from '../transport/peerCodec.js';
import { PeerLink } from '../transport/PeerLink.js';
import {
  PEER_PROTOCOL_VERSION,
  checkHello,
  isPeerMsg,
  newNonce,
  proof,
  proofMatches,
  type AcceptFrame,
  type ChallengeFrame,
  type Envelope,
  type MemberInfo,
  type PeerMsg,
} from '../transport/peerProtocol.js';
import { initialMembership, memberList, membershipTransition, type MembershipEffect, type MembershipState } from './MembershipLogic.js';
import type { RouteMember } from './messages.js';
import { defaultPhiOptions, type PhiOptions } from './PhiAccrual.js';

export interface MembershipOptions {
  self: MemberInfo;
  cluster: string;
  secret: string | undefined;
  seeds: readonly string[];
  /** Largest peer frame. */
  maxPayload: number;
  /** Heartbeat (and gossip) interval. Default 200 ms. */
  heartbeatMs?: number;
  phi?: PhiOptions;
  log: Logger;
  metrics?: Metrics;
  /** Peers are dialled over TLS. */
  tls?: { ca?: string | Buffer };
  /** Local load by model, sent with every heartbeat. */
  localLoad: () => Record<string, number>;
  onView: (members: RouteMember[], self: RouteMember) => void;
  onNodeLost: (nodeId: string) => void;
  onMessage: (from: string, msg: PeerMsg) => void;
}

export interface MemberView {
  nodeId: string;
  incarnation: number;
  addr: string;
  models: string[];
  status: string;
  linked: boolean;
}

export class Membership {
  private readonly state: MembershipState;
  private readonly links = new Map<string, PeerLink>();
  private readonly seedLinks = new Set<PeerLink>();
  private readonly loads = new Map<string, Record<string, number>>();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly log: Logger;
  private stopped = false;

  constructor(private readonly o: MembershipOptions) {
    this.state = initialMembership(o.self, o.phi ?? defaultPhiOptions);
    this.log = o.log.child({ actor: 'membership' });
  }

  start(): void {
    if (this.o.seeds.length > 0 && !this.o.secret) throw new RangeError('joining a cluster needs --cluster-secret (or ACTORSERVE_CLUSTER_SECRET)');
    for (const addr of this.o.seeds) this.seedLinks.add(this.dial(addr, undefined));
    const hb = setInterval(() => this.heartbeat(), this.o.heartbeatMs ?? 200);
    const tick = setInterval(() => this.apply({ t: 'tick' }), 100);
    hb.unref();
    tick.unref();
    this.timers.push(hb, tick);
    this.publish();
  }

  /** Dials addresses not already linked or being dialled. */
  addSeeds(addrs: readonly string[]): void {
    const known = new Set([...this.links.values(), ...this.seedLinks].map((l) => l.addr));
    for (const addr of addrs) {
      if (!known.has(addr) && addr !== this.state.self.addr) this.seedLinks.add(this.dial(addr, undefined));
    }
  }

  get self(): MemberInfo {
    return this.state.self;
  }

  setSelfState(state: MemberInfo['state']): void {
    this.apply({ t: 'selfState', state });
    this.heartbeat();
  }

  /** The models this node offers (a model whose workers all gave up is withdrawn). */
  setModels(models: string[]): void {
    this.apply({ t: 'selfModels', models });
    this.heartbeat();
  }

  /** Sends to a peer's router over our link; false when there is no open link. */
  send(nodeId: string, msg: PeerMsg, to = 'router'): boolean {
    const link = this.links.get(nodeId);
    if (!link?.open || this.cut.has(nodeId)) return false;
    const env: Envelope = { to, from: this.state.self.nodeId, msg };
    const f = this.faults;
    if (f.dropFraction > 0 && Math.random() < f.dropFraction) return true; // lost on the wire, as far as the sender knows
    if (f.delayMs > 0) {
      const t = setTimeout(() => void link.send(env), f.delayMs);
      t.unref();
      return true;
    }
    return link.send(env);
  }

  /** Chaos: outgoing peer messages are dropped with this probability and delayed by this much. */
  readonly faults = { dropFraction: 0, delayMs: 0 };
  private readonly cut = new Set<string>();

  /** Chaos: cut the link to a peer both ways until healed (this node's side of a partition). */
  cutLink(nodeId: string): boolean {
    const link = this.links.get(nodeId);
    if (!link) return false;
    this.cut.add(nodeId);
    link.blocked = true;
    link.breakConnection();
    for (const ws of this.inbound.get(nodeId) ?? []) ws.terminate();
    return true;
  }

  heal(nodeId?: string): void {
    for (const id of nodeId ? [nodeId] : [...this.cut]) {
      this.cut.delete(id);
      const link = this.links.get(id);
      if (link) link.blocked = false;
    }
  }

  /** Inbound sockets per peer, so a cut can close them too. */
  private readonly inbound = new Map<string, Set<WebSocket>>();

  view(): MemberView[] {
    const self = this.state.self;
    return [
      { nodeId: self.nodeId, incarnation: self.incarnation, addr: self.addr, models: self.models, status: self.state, linked: true },
      ...memberList(this.state).map((m) => ({
        nodeId: m.info.nodeId,
        incarnation: m.info.incarnation,
        addr: m.info.addr,
        models: m.info.models,
        status: m.status,
        linked: this.links.get(m.info.nodeId)?.open ?? false,
      })),
    ].sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1));
  }

  /** Chaos and tests: break the link to a peer as a network fault would. */
  breakLink(nodeId: string): boolean {
    const link = this.links.get(nodeId);
    link?.breakConnection();
    return link !== undefined;
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    for (const l of [...this.links.values(), ...this.seedLinks]) l.close();
    this.links.clear();
    this.seedLinks.clear();
  }

  /** Listener side of the handshake for a socket upgraded on /cluster. */
  accept(ws: WebSocket, req: IncomingMessage): void {
    const self = this.state.self;
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (!this.o.secret || this.stopped) {
      this.log.warn({ remote }, 'peer refused: this node has no cluster secret');
      return ws.close(CloseCode.policyViolation, 'unauthorized');
    }
    const nonce = newNonce();
    let peer: MemberInfo | undefined;
    const refuse = (reason: string) => {
      this.log.warn({ remote, reason }, 'peer refused');
      ws.close(CloseCode.policyViolation, 'unauthorized');
    };
    const timer = setTimeout(() => peer || refuse('handshake timed out'), 5_000);
    ws.on('close', () => {
      clearTimeout(timer);
      if (peer) {
        this.inbound.get(peer.nodeId)?.delete(ws);
        this.log.debug({ peer: peer.nodeId }, 'inbound peer link closed');
      }
    });
    ws.on('error', (e) => this.log.debug({ remote, err: e.message }, 'inbound peer link error'));
    ws.on('message', (data: Buffer) => {
      this.o.metrics?.bytesReceived('peer', data.byteLength);
      // Before the handshake anyone may connect: a hello is a few KiB, and decoding a 64 MiB map first cost seconds of event loop.
      if (!peer && data.byteLength > 64 * 1024) return refuse(`oversized hello (${data.byteLength} bytes)`);
      let f: unknown;
      try {
        f = decodePeer(data);
      } catch {
        if (!peer) return refuse('undecodable hello');
        return ws.close(CloseCode.invalidPayload, 'undecodable peer frame');
      }
      if (!peer) {
        if (!checkHello.Check(f)) return refuse('malformed hello');
        if (f.protocol !== PEER_PROTOCOL_VERSION) return refuse(`peer protocol ${f.protocol}`);
        if (f.cluster !== this.o.cluster) return refuse(`peer is in cluster ${f.cluster}`);
        const want = proof(this.o.secret!, 'dialer', nonce, this.o.cluster, f.member.nodeId, self.nodeId);
        if (!proofMatches(want, f.proof)) return refuse(`bad proof from ${f.member.nodeId} (wrong secret or replayed handshake)`);
        if (f.member.nodeId === self.nodeId) return refuse('peer claims our node id');
        if (this.cut.has(f.member.nodeId)) return ws.terminate();
        peer = f.member;
        if (!this.inbound.has(peer.nodeId)) this.inbound.set(peer.nodeId, new Set());
        this.inbound.get(peer.nodeId)!.add(ws);
        clearTimeout(timer);
        const accept: AcceptFrame = { t: 'accept', proof: proof(this.o.secret!, 'listener', f.nonce, this.o.cluster, self.nodeId, f.member.nodeId) };
        ws.send(encode(accept));
        this.log.info({ peer: peer.nodeId, incarnation: peer.incarnation, addr: peer.addr }, 'peer joined');
        this.apply({ t: 'hello', info: peer });
        return;
      }
      this.receive(peer, f);
    });
    const challenge: ChallengeFrame = { t: 'challenge', cluster: this.o.cluster, nodeId: self.nodeId, incarnation: self.incarnation, nonce };
    ws.send(encode(challenge));
  }

  private receive(peer: MemberInfo, frame: unknown): void {
    if (!Array.isArray(frame)) return;
    this.apply({ t: 'heard', nodeId: peer.nodeId, incarnation: peer.incarnation });
    let malformed = 0;
    for (const env of frame as unknown[]) {
      const msg = (env as Partial<Envelope> | null | undefined)?.msg;
      if (!isPeerMsg(msg)) {
        malformed++;
        continue;
      }
      if (msg.t === 'hb') {
        this.loads.set(peer.nodeId, msg.load ?? {});
        this.apply({ t: 'gossip', from: peer.nodeId, state: msg.state, models: Array.isArray(msg.models) ? msg.models : undefined, view: Array.isArray(msg.view) ? msg.view : [] });
        this.publish();
      } else {
        this.o.onMessage(peer.nodeId, msg);
      }
    }
    if (malformed > 0) this.log.warn({ peer: peer.nodeId, malformed }, 'malformed peer messages dropped');
  }

  private heartbeat(): void {
    const self = this.state.self;
    const view: MemberInfo[] = memberList(this.state).filter((m) => m.status !== 'down').map((m) => m.info);
    const msg: PeerMsg = { t: 'hb', state: self.state, models: self.models, view, load: this.o.localLoad() };
    for (const id of this.links.keys()) this.send(id, msg, 'membership');
  }

  private dial(addr: string, nodeId: string | undefined): PeerLink {
    return new PeerLink({
      addr,
      cluster: this.o.cluster,
      secret: this.o.secret ?? '',
      self: () => this.state.self,
      ...(nodeId ? { expectNodeId: nodeId } : {}),
      maxPayload: this.o.maxPayload,
      log: this.log,
      ...(this.o.metrics ? { onSent: (n: number) => this.o.metrics!.bytesSent('peer', n) } : {}),
      ...(this.o.tls ? { tls: this.o.tls } : {}),
      onOpen: (link, peer) => {
        const current = this.links.get(peer.nodeId);
        if (current && current !== link && current.open) {
          // Already linked (a seed address of a known node): keep one link per peer.
          this.seedLinks.delete(link);
          link.close();
          return;
        }
        if (current && current !== link) current.close();
        this.seedLinks.delete(link);
        this.links.set(peer.nodeId, link);
        this.heartbeat();
        this.publish();
      },
      onClose: (link, peer, reason) => {
        if (!peer || this.links.get(peer.nodeId) !== link) return;
        if (reason === 'final') this.links.delete(peer.nodeId);
        this.apply({ t: 'linkLost', nodeId: peer.nodeId });
      },
    });
  }

  private apply(msg: Parameters<typeof membershipTransition>[1]): void {
    if (this.stopped) return;
    let changed = false;
    for (const fx of membershipTransition(this.state, msg, performance.now())) changed = this.effect(fx) || changed;
    if (changed) this.publish();
  }

  private effect(fx: MembershipEffect): boolean {
    switch (fx.t) {
      case 'dial': {
        const have = this.links.get(fx.nodeId);
        if (have && have.addr === fx.addr) return false;
        have?.close();
        this.links.set(fx.nodeId, this.dial(fx.addr, fx.nodeId));
        return false;
      }
      case 'unreachable':
        this.log.warn({ peer: fx.nodeId, status: fx.status }, fx.status === 'down' ? 'peer marked down' : 'peer suspected');
        this.o.onNodeLost(fx.nodeId);
        if (fx.status === 'down' && !this.state.members.has(fx.nodeId)) this.links.get(fx.nodeId)?.close();
        return true;
      case 'changed':
        for (const [id, link] of this.links) {
          if (!this.state.members.has(id)) {
            link.close();
            this.links.delete(id);
          }
        }
        return true;
    }
  }

  private publish(): void {
    const self = this.state.self;
    const members: RouteMember[] = memberList(this.state).map((m) => ({
      nodeId: m.info.nodeId,
      incarnation: m.info.incarnation,
      state: m.status,
      models: m.info.models,
      linked: this.links.get(m.info.nodeId)?.open ?? false,
      load: this.loads.get(m.info.nodeId) ?? {},
    }));
    this.o.onView(members, { nodeId: self.nodeId, incarnation: self.incarnation, state: self.state, models: self.models, linked: true, load: {} });
  }
}
