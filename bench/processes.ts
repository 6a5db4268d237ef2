/**
 * Probes the bench runs against its child processes (see cluster/child.ts for
 * how they are started and stopped by their own pids): free ports, CPU time
 * and memory from /proc, HTTP checks.
 */
import { readdirSync, readFileSync } from 'node:fs';

export { httpStatus } from '../cluster/child.js';
export { freePorts } from '../cluster/ports.js';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves true when `p` settles within `ms`, false otherwise; the timer never outlives the race. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  try {
    return await Promise.race([p.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Milliseconds since the epoch with sub-millisecond resolution; comparable across processes on one machine. */
export const epochMs = (): number => performance.timeOrigin + performance.now();

export async function httpText(url: string, timeoutMs = 1_000): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return res.status === 200 ? text : undefined;
  } catch {
    return undefined;
  }
}

/** Linux clock ticks per second for /proc/PID/stat (USER_HZ, 100 on every mainstream kernel). */
const CLK_TCK = 100;

/** utime + stime of a /proc stat file (a process's or one thread's), in seconds. */
function statCpuSeconds(path: string): number {
  const stat = readFileSync(path, 'utf8');
  // Fields after the parenthesised name: state is 3rd of the line, utime the 14th, stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

/**
 * CPU seconds (user + system, all threads) of a process from /proc/PID/stat;
 * undefined where /proc is missing or the process is gone.
 */
export function cpuSeconds(pid: number): number | undefined {
  try {
    return statCpuSeconds(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
}

/**
 * Busy CPU seconds of the whole machine, all cores, from /proc/stat (user,
 * nice, system, irq, softirq, steal); undefined without /proc.
 */
export function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0)) / CLK_TCK;
  } catch {
    return undefined;
  }
}

/** {@link cpuSeconds} of each pid; undefined when any is unreadable. */
export function cpuSecondsOf(pids: readonly number[]): number[] | undefined {
  const out: number[] = [];
  for (const pid of pids) {
    const s = cpuSeconds(pid);
    if (s === undefined) return undefined;
    out.push(s);
  }
  return out;
}

/** Resident memory (VmRSS) of a process in bytes from /proc/PID/status; undefined where /proc is missing or the process is gone. */
export function rssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** A process's main thread (a Node process's event loop) at one moment, and the CPU of its other threads. */
export interface MainThreadSample {
  cpuSeconds: number;
  /**
   * Times the scheduler switched it out while it could still run
   * (`nonvoluntary_ctxt_switches`): preempted by another thread; in the
   * bench, mostly the load generator that its own write had just woken.
   */
  preempted: number;
  /** CPU seconds of each of the process's other threads, by thread id (an inference thread among them). */
  others: ReadonlyMap<number, number>;
}

/**
 * {@link MainThreadSample} from /proc/PID/task/PID (the thread whose id is
 * the pid); undefined where /proc is missing or the process is gone.
 */
export function mainThreadSample(pid: number): MainThreadSample | undefined {
  try {
    const m = /^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'));
    if (m === null) return undefined;
    const others = new Map<number, number>();
    for (const tid of readdirSync(`/proc/${pid}/task`).map(Number)) {
      if (tid === pid) continue;
      try {
        others.set(tid, statCpuSeconds(`/proc/${pid}/task/${tid}/stat`));
      } catch {
        // A thread that ended between the listing and the read.
      }
    }
    return { cpuSeconds: statCpuSeconds(`/proc/${pid}/task/${pid}/stat`), preempted: Number(m[1]), others };
  } catch {
    return undefined;
  }
}
