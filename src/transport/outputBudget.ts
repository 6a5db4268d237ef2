/**
 * The node-wide bound on results its clients leave unread. Each connection
 * already has its own watermark (`maxBufferedBytes`), but a thousand clients
 * that each stop reading just under it would still hold gigabytes between
 * them: a handful of slow or hostile readers could take the node's memory
 * from everyone. So the node also bounds the sum, and when it is past the
 * budget closes the connections holding the most unread bytes, largest
 * first, only as many as it takes to get back under. A client that reads
 * its results never holds any for long and is never chosen.
 */

/** How often the node sums its clients' unread bytes. */
export const OUTPUT_SWEEP_MS = 100;

/**
 * The connections to close so that what the others hold fits in `budget`:
 * the largest backlogs first, none when the total already fits.
 * @returns the victims (largest first) and the total before closing any.
 */
export function overOutputBudget<T>(conns: Iterable<T>, unread: (c: T) => number, budget: number): { victims: T[]; total: number } {
  const held: { c: T; bytes: number }[] = [];
  let total = 0;
  for (const c of conns) {
    const bytes = unread(c);
    if (bytes <= 0) continue;
    held.push({ c, bytes });
    total += bytes;
  }
  if (total <= budget) return { victims: [], total };
  held.sort((a, b) => b.bytes - a.bytes);
  const victims: T[] = [];
  let left = total;
  for (const h of held) {
    if (left <= budget) break;
    victims.push(h.c);
    left -= h.bytes;
  }
  return { victims, total };
}
