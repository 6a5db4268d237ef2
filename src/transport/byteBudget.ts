/**
 * Node-wide bounds on what client connections hold in the node's memory.
 * Each connection has its own limits (the largest frame, results it may
 * leave unread), but nothing bounded the sum: a thousand readers that each
 * stop just under their 8 MiB watermark, or a thousand senders that each
 * stall halfway through an 8 MiB frame, would hold gigabytes between them,
 * and a handful of slow or hostile clients could take the node's memory
 * from everyone. So the node also bounds each sum (results written and not
 * yet taken by the socket; bytes of frames not yet complete), and when one
 * is past its budget closes the connections holding the most, largest
 * first, only as many as it takes to get back under. A client that reads
 * its results and sends whole frames at network speed never holds much for
 * long and is the last to be chosen.
 */
import type { WebSocket } from 'ws';

/** How often the node sums what its clients hold. */
export const SWEEP_MS = 100;

/**
 * The connections to close so that what the others hold fits in `budget`:
 * the largest holders first, none when the total already fits.
 * @returns the victims (largest first) and the total before closing any.
 */
export function overBudget<T>(conns: Iterable<T>, held: (c: T) => number, budget: number): { victims: T[]; total: number } {
  const holders: { c: T; bytes: number }[] = [];
  let total = 0;
  for (const c of conns) {
    const bytes = held(c);
    if (bytes <= 0) continue;
    holders.push({ c, bytes });
    total += bytes;
  }
  if (total <= budget) return { victims: [], total };
  holders.sort((a, b) => b.bytes - a.bytes);
  const victims: T[] = [];
  let left = total;
  for (const h of holders) {
    if (left <= budget) break;
    victims.push(h.c);
    left -= h.bytes;
  }
  return { victims, total };
}

/** Results written to a client and not yet taken by its socket; nothing once it is closing (terminate() drops them). */
export const unreadBytes = (ws: WebSocket): number => (ws.readyState === ws.OPEN ? ws.bufferedAmount : 0);

/** The parts of ws 8's frame parser that hold received bytes (private: read defensively, 0 when absent). */
interface ReceiverState {
  /** Bytes received and not yet parsed: a frame whose payload is still arriving sits here. */
  _bufferedBytes?: number;
  /** Payloads of the frames of a fragmented message received so far. */
  _fragments?: readonly Uint8Array[];
}

/** Bytes of client frames received but not yet complete (nor handed over as a message). */
export function receivingBytes(ws: WebSocket): number {
  if (ws.readyState !== ws.OPEN) return 0;
  const r = (ws as unknown as { _receiver?: ReceiverState | null })._receiver;
  if (!r) return 0;
  let bytes = typeof r._bufferedBytes === 'number' ? r._bufferedBytes : 0;
  if (Array.isArray(r._fragments)) for (const f of r._fragments) bytes += f.byteLength;
  return bytes;
}
