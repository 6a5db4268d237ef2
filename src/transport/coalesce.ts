/**
 * Replies written in one run of JavaScript leave in one syscall: the socket
 * is corked at the first write and uncorked once the callback that wrote and
 * the actor work it chained in microtasks are done. A node answering
 * thousands of small frames a second otherwise paid a `writev` per frame
 * (measured ~50 µs each on a small VM, the largest single cost of refusing a
 * request under overload). Latency cost: none; an uncork in the check phase
 * (as before) cost a lone reply one more event-loop turn.
 *
 * "Done" is the first next-tick after the microtask queue drains: Node runs
 * next-ticks before microtasks when a callback returns, but those queued
 * from a microtask only once no microtask is left. So the uncork is queued
 * on the next tick from a microtask.
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
      queueMicrotask(() => process.nextTick(flush));
    }
    ws.send(bytes);
  };
}
