/**
 * Linux: sets the calling thread's scheduling priority (nice). Threads
 * created afterwards inherit it. Elsewhere nice is per process, so nothing
 * is changed; without /proc or permission the thread keeps its priority.
 */
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';

export function setThreadNice(nice: number): void {
  if (process.platform !== 'linux' || nice === 0) return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // No /proc or not permitted: run at the process's priority.
  }
}
