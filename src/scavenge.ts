/**
 * Whether V8's young-generation collections (scavenges) use helper threads,
 * for a node on few cores.
 *
 * Scavenges under tensor traffic are set by bytes received, not by the heap:
 * V8 runs one whenever the backing stores of young ArrayBuffers reach a fixed
 * amount, and each 110 KB text-orientation request brings about 220 KB (the
 * socket reads, then ws's copy of the frame out of its 64 KB chunks). Under 3×
 * overload that is about 20 scavenges a second, each ~1 ms of event-loop pause,
 * whatever the semi-space size. By default V8 splits each one over helper
 * threads and the main thread waits for them; on 2 cores those helpers have to
 * find a core beside the inference threads, so most of the pause is waiting
 * (perf put under 1% of the main thread's CPU in GC code). With the scavenge on
 * the main thread alone each one paused 13–25% less and the overload window
 * ~10% less in all (A/B in docs/bench/overload.md; the bench report's "GC
 * pauses" row gives them for every run).
 *
 * The flag is process-wide and read by V8 at every scavenge, so setting it at
 * start-up is enough. On more cores the helpers find idle cores and shorten
 * the pause, so `auto` keeps them there.
 */
import { setFlagsFromString } from 'node:v8';
import { usableCores } from './cores.js';

export const PARALLEL_SCAVENGE_SETTINGS = ['auto', 'on', 'off'] as const;
export type ParallelScavenge = (typeof PARALLEL_SCAVENGE_SETTINGS)[number];

/** At or below this many cores `auto` scavenges on the main thread alone. */
export const SINGLE_THREAD_SCAVENGE_MAX_CORES = 2;

/** Whether scavenges should use helper threads for `setting` on a machine with `cores` cores. */
export function parallelScavengeFor(setting: ParallelScavenge, cores: number): boolean {
  if (setting === 'auto') return cores > SINGLE_THREAD_SCAVENGE_MAX_CORES;
  return setting === 'on';
}

/**
 * Applies `--parallel-scavenge` (auto, on or off) to this process's V8 and
 * returns whether scavenges now use helper threads. Call once, at process start.
 */
export function applyParallelScavenge(setting: string, cores = usableCores()): boolean {
  if (!(PARALLEL_SCAVENGE_SETTINGS as readonly string[]).includes(setting)) {
    throw new RangeError(`parallel scavenge must be one of ${PARALLEL_SCAVENGE_SETTINGS.join(', ')}, got ${JSON.stringify(setting)}`);
  }
  const parallel = parallelScavengeFor(setting as ParallelScavenge, cores);
  setFlagsFromString(parallel ? '--parallel-scavenge' : '--no-parallel-scavenge');
  return parallel;
}
