/**
 * WebSocket keepalive, one beat at a time, for either end: the node pings
 * its clients, the TypeScript client pings its node. A peer that has sent
 * nothing (no pong, no frame) since the last ping when the next beat comes is
 * gone: its machine lost, a NAT that forgot the connection. Whoever hears from
 * the peer sets `awaitingPong` back to false.
 */
import type { WebSocket } from 'ws';

/** What a keepalive keeps of one peer. */
export interface Liveness {
  /** Pinged, and nothing heard from the peer since. */
  awaitingPong: boolean;
}

/** Pings the peer and returns true; returns false, sending nothing, when it said nothing since the last ping. */
export function beat(ws: WebSocket, peer: Liveness): boolean {
  if (peer.awaitingPong) return false;
  peer.awaitingPong = true;
  ws.ping();
  return true;
}
