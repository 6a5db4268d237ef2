/**
 * Replies written in one event-loop turn leave in one syscall: the socket
 * is corked at the first write of a turn and uncorked in that turn's check
 * phase. A node answering thousands of small frames a second otherwise paid
 * a `writev` per frame (measured ~50 µs each on a small VM, the largest
 * single cost of refusing a request under overload). Latency cost: none past
 * the current turn.
 */
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';

export function coalescingSender(ws: WebSocket): (bytes: Uint8Array) => void {
  // ws keeps its net.Socket here; without it (a test double), frames go out one by one.
  const socket = (ws as unknown as { _socket?: Socket })._socket;
  let corked = false;
  const flush = () => {
    corked = false;
    if (!socket!.destroyed) socket!.uncork();
  };
  return (bytes) => {
    if (socket && !corked && !socket.destroyed) {
      corked = true;
      socket.cork();
      setImmediate(flush);
    }
    ws.send(bytes);
  };
}
