/**
 * The outbound half of a peer connection: dials `ws://ADDR/cluster`, proves
 * knowledge of the cluster secret (and checks the listener's proof), then
 * carries envelopes, several per frame: sends made in one turn of the event
 * loop leave together. Reconnects with capped exponential backoff until
 * closed.
 */
import WebSocket from 'ws';
import type { Logger } from '../log.js';
import { encode } from './codec.js';
import { decodePeer } from './peerCodec.js';
import {
  PEER_PROTOCOL_VERSION,
  checkAccept,
  checkChallenge,
  newNonce,
  proof,
  proofMatches,
  type Envelope,
  type HelloFrame,
  type MemberInfo,
} from './peerProtocol.js';

export interface PeerLinkOptions {
  addr: string;
  cluster: string;
  secret: string;
  /** Our own member info, read at every (re)connect. */
  self: () => MemberInfo;
  /** When known (from gossip), a listener with another id is refused. */
  expectNodeId?: string;
  maxPayload: number;
  log: Logger;
  /** Dial wss:// (the cluster runs TLS); `ca` verifies the peers' certificates, read at every (re)connect. */
  tls?: { ca?: string | Buffer };
  /** Told the size of every frame sent (metrics). */
  onSent?: (bytes: number) => void;
  onOpen: (link: PeerLink, peer: { nodeId: string; incarnation: number }) => void;
  onClose: (link: PeerLink, peer: { nodeId: string; incarnation: number } | undefined, reason: string) => void;
}

/** Bytes a peer may leave unsent in our socket before we stop giving it work. */
export const PEER_HIGH_WATERMARK = 32 * 1024 * 1024;

export class PeerLink {
  private ws: WebSocket | undefined;
  private pending: Envelope[] = [];
  private flushScheduled = false;
  private closed = false;
  private backoffMs = 100;
  private timer: NodeJS.Timeout | undefined;
  peer: { nodeId: string; incarnation: number } | undefined;
  open = false;

  constructor(private readonly o: PeerLinkOptions) {
    this.connect();
  }

  get addr(): string {
    return this.o.addr;
  }

  /**
   * Queues an envelope for the next frame; false when the link is not open or
   * the peer is not keeping up (past the high watermark), so the caller re-routes.
   */
  send(env: Envelope): boolean {
    if (!this.open) return false;
    if ((this.ws?.bufferedAmount ?? 0) > PEER_HIGH_WATERMARK) return false;
    this.pending.push(env);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  /** Bytes queued in the socket, counted as load on this peer. */
  get bufferedAmount(): number {
    return this.ws?.bufferedAmount ?? 0;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000, 'closing');
    this.ws = undefined;
    this.open = false;
  }

  /** Chaos and tests: drop the connection as a broken network would; it reconnects. */
  breakConnection(): void {
    this.ws?.terminate();
  }

  /** Chaos: while blocked, the link stays down and does not reconnect (a partition). */
  blocked = false;

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0 || !this.open || !this.ws) return;
    const bytes = encode(batch);
    this.o.onSent?.(bytes.byteLength);
    this.ws.send(bytes);
  }

  private connect(): void {
    if (this.closed) return;
    if (this.blocked) {
      this.timer = setTimeout(() => this.connect(), 100);
      return;
    }
    const scheme = this.o.tls ? 'wss' : 'ws';
    let ws: WebSocket;
    try {
      ws = new WebSocket(`${scheme}://${this.o.addr}/cluster`, {
        maxPayload: this.o.maxPayload,
        perMessageDeflate: false,
        handshakeTimeout: 5_000,
        ...(this.o.tls?.ca ? { ca: this.o.tls.ca } : {}),
      });
    } catch (e) {
      // An address that makes no URL (a hello or gossip may carry any string) threw out of the message handler
      // that learnt it, and took the node down. There is nothing to dial, now or later.
      this.o.log.warn({ peer: this.o.addr, err: (e as Error).message }, 'peer address is unusable; not dialling it');
      this.closed = true;
      return;
    }
    this.ws = ws;
    const nonce = newNonce();
    let listenerId: string | undefined;
    let state: 'challenge' | 'accept' | 'open' = 'challenge';
    let final = false;
    const refuse = (why: string, permanent = false) => {
      final = permanent;
      // Finding ourselves or a known node at a seed address is routine, not a warning.
      this.o.log[permanent ? 'debug' : 'warn']({ peer: this.o.addr, reason: why }, 'peer link refused');
      ws.close(1008, why.slice(0, 100));
    };
    ws.on('message', (data: Buffer) => {
      let f: unknown;
      try {
        f = decodePeer(data);
      } catch {
        return refuse('undecodable handshake frame');
      }
      const self = this.o.self();
      if (state === 'challenge') {
        if (!checkChallenge.Check(f)) return refuse('bad challenge');
        if (f.cluster !== this.o.cluster) return refuse(`listener is in cluster ${f.cluster}`);
        if (f.nodeId === self.nodeId) return refuse('dialled ourselves', true);
        if (this.o.expectNodeId && f.nodeId !== this.o.expectNodeId) return refuse(`expected ${this.o.expectNodeId}, found ${f.nodeId}`, true);
        listenerId = f.nodeId;
        this.peer = { nodeId: f.nodeId, incarnation: f.incarnation };
        const hello: HelloFrame = {
          t: 'hello',
          protocol: PEER_PROTOCOL_VERSION,
          cluster: this.o.cluster,
          member: self,
          nonce,
          proof: proof(this.o.secret, 'dialer', f.nonce, this.o.cluster, self.nodeId, f.nodeId),
        };
        ws.send(encode(hello));
        state = 'accept';
      } else if (state === 'accept') {
        if (!checkAccept.Check(f)) return refuse('bad accept');
        const want = proof(this.o.secret, 'listener', nonce, this.o.cluster, listenerId!, self.nodeId);
        if (!proofMatches(want, f.proof)) return refuse('listener does not know the cluster secret');
        state = 'open';
        this.open = true;
        this.backoffMs = 100;
        this.o.onOpen(this, this.peer!);
      }
    });
    ws.on('error', (e) => this.o.log.debug({ peer: this.o.addr, err: e.message }, 'peer link error'));
    ws.on('close', (code, reason) => {
      const wasOpen = this.open;
      this.open = false;
      if (this.ws === ws) this.ws = undefined;
      if (wasOpen) this.o.log.info({ peer: this.o.addr, code, reason: reason.toString() }, 'peer link closed');
      // A refusal that cannot change (we dialled ourselves, another node answers) is not retried.
      if (final) this.closed = true;
      this.o.onClose(this, this.peer, final ? 'final' : reason.toString() || `code ${code}`);
      if (this.closed) return;
      this.timer = setTimeout(() => this.connect(), this.backoffMs);
      this.backoffMs = Math.min(2_000, this.backoffMs * 2);
    });
  }
}
