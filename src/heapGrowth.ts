/**
 * How far V8 lets the JavaScript heap grow between full (mark-compact)
 * collections, for a process that moves tensors.
 *
 * V8 counts ArrayBuffer bytes allocated since the last mark-compact against
 * the old generation's limit, and sets that limit from the live heap times a
 * growing factor it estimates from how fast the program allocates. A node's
 * live heap is small (about 11 MiB) while every 110 KB request frame brings
 * two socket buffers and one reassembled payload, almost all of which die
 * young. So V8 estimated a factor near its minimum, the limit sat a few MiB
 * above the live heap, and the node ran a full collection every ~100 ms under
 * text-orientation load: ~16% of a core on V8's helper threads plus 5–10 ms
 * pauses of the event loop, on the cores inference needs. Pinning the factor
 * at V8's own maximum (4×, what it picks when collection is cheap relative to
 * allocation, as it is here) cut the collections from ~30 to 1–3 per 5 s, the
 * helper threads from ~16% to ~5% of a core and the event loop's worst delay
 * from ~20 to ~12 ms (A/B on one node, closed loop of 32 requests).
 *
 * The flag is process-wide (every isolate, worker threads included) and read
 * by V8 each time it recomputes the limit, so setting it at start-up, before
 * the first collection that matters, is enough. It bounds garbage, not live
 * data: live request tensors are held to the node's memory budget elsewhere.
 */
import { setFlagsFromString } from 'node:v8';

/** `--heap-growth-percent` default: V8's maximum growing factor, 4× (growth of 300%). */
export const DEFAULT_HEAP_GROWTH_PERCENT = 300;
/** Above this the heap could hold 11× its live size in garbage: refused as a mistake. */
export const MAX_HEAP_GROWTH_PERCENT = 1000;

/**
 * Sets V8's heap growing factor to 1 + percent/100; 0 leaves V8's adaptive
 * factor alone. Call once, at process start, in a process that is a node.
 */
export function applyHeapGrowth(percent: number): void {
  if (!Number.isInteger(percent) || percent < 0 || percent > MAX_HEAP_GROWTH_PERCENT) {
    throw new RangeError(`heap growth must be an integer percent in 0..${MAX_HEAP_GROWTH_PERCENT}, got ${percent}`);
  }
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}

/**
 * The old generation's floor, in MiB: V8 starts no full collection while
 * the old generation is under it. A node's live heap is ~13 MiB, but V8
 * also counts ArrayBuffer bytes allocated since the last full collection
 * and starts marking once less room is left than the young generation
 * holds; under 3× text-orientation overload that ran a full collection
 * every ~1.7 s even at the 4× growth factor. Each one paused the event loop
 * ~5 ms and put V8's helper threads on both cores, where the clients' own
 * threads then waited 4 ms for a core: the longest stalls left in the
 * overload window. With the floor, one ran as the queue filled and none in
 * the window after it (trace-gc), and the p99 time to `overloaded` fell
 * from 3.5–6.2 to 3.0–3.6 ms and high priority's p99 from 6.6–10.3 to
 * 6.0–6.6 ms, goodput the same (4 A/B pairs, docs/bench/overload.md).
 * It bounds garbage, not live data: the heap's limit is its live size times
 * the growth factor, or this floor if that is higher.
 *
 * V8 reads it only when it creates the heap, so it cannot be set from
 * JavaScript: the node process must start with {@link OLD_SPACE_FLOOR_FLAG}
 * (bin/actorserve.js run as a command, the launchers, the container image).
 */
export const OLD_SPACE_FLOOR_MIB = 256;
export const OLD_SPACE_FLOOR_FLAG = `--initial-old-space-size=${OLD_SPACE_FLOOR_MIB}`;

/** The old generation's floor this process was started with (`--initial-old-space-size`), in MiB; undefined without one. */
export function oldSpaceFloorMib(execArgv: readonly string[] = process.execArgv): number | undefined {
  let floor: number | undefined;
  execArgv.forEach((arg, i) => {
    const m = /^--initial[-_]old[-_]space[-_]size(?:=(.*))?$/.exec(arg);
    if (!m) return;
    const value = Number(m[1] ?? execArgv[i + 1]);
    if (Number.isFinite(value)) floor = value;
  });
  return floor;
}
