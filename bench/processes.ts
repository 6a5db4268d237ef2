/**
 * Child processes of the bench: every one is registered here when spawned and
 * stopped by its own pid (SIGTERM, then SIGKILL after a grace period), also
 * on SIGINT/SIGTERM of the bench and on error. Plus the small probes the
 * bench runs against them: free ports, readiness, CPU time from /proc.
 */
import { fork, spawn, type ChildProcess, type ForkOptions, type SpawnOptions } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

export interface Tracked {
  proc: ChildProcess;
  role: string;
  pid: number;
  /** The last lines of stdout and stderr together, for error messages. */
  tail: string[];
  exited: Promise<number | string | null>;
}

const live = new Set<Tracked>();
/** Every process this bench started, in start order, kept after they exit (the report lists them). */
export const started: { role: string; pid: number }[] = [];

const TAIL_LINES = 30;

function track(proc: ChildProcess, role: string): Tracked {
  if (proc.pid === undefined) throw new Error(`could not start ${role}`);
  const tail: string[] = [];
  const keep = (line: string) => {
    tail.push(line);
    if (tail.length > TAIL_LINES) tail.shift();
  };
  if (proc.stdout) createInterface({ input: proc.stdout }).on('line', keep);
  if (proc.stderr) createInterface({ input: proc.stderr }).on('line', keep);
  const exited = new Promise<number | string | null>((resolve) =>
    proc.once('exit', (code, signal) => {
      live.delete(t);
      resolve(signal ?? code);
    }),
  );
  const t: Tracked = { proc, role, pid: proc.pid, tail, exited };
  live.add(t);
  started.push({ role, pid: proc.pid });
  return t;
}

/** Spawns `node ARGS` (stdout and stderr piped into the tail). */
export function spawnNodeProcess(role: string, args: string[], opts: SpawnOptions = {}): Tracked {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  return track(proc, role);
}

/** Forks a Node module with an IPC channel (the load generators). */
export function forkProcess(role: string, modulePath: string, args: string[] = [], opts: ForkOptions = {}): Tracked {
  const proc = fork(modulePath, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: [], ...opts });
  return track(proc, role);
}

export const isRunning = (t: Tracked): boolean => t.proc.exitCode === null && t.proc.signalCode === null;

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false; // already gone
  }
}

/** SIGTERM by pid, SIGKILL after `graceMs`; resolves when the process has exited. */
export async function stop(t: Tracked, graceMs = 5_000): Promise<void> {
  if (!isRunning(t)) return;
  signal(t.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (isRunning(t)) signal(t.pid, 'SIGKILL');
  }, graceMs);
  await t.exited;
  clearTimeout(timer);
}

/** SIGKILL by pid (the abrupt death of the fault scenario); resolves on exit. */
export async function kill(t: Tracked): Promise<void> {
  if (!isRunning(t)) return;
  signal(t.pid, 'SIGKILL');
  await t.exited;
}

/** Stops every live child, gracefully, all at once. */
export async function stopAll(graceMs = 5_000): Promise<void> {
  await Promise.all([...live].map((t) => stop(t, graceMs)));
}

/** Last resort (SIGINT, uncaught error): SIGKILL each live child by its pid, synchronously. */
export function killAllNow(): void {
  for (const t of live) signal(t.pid, 'SIGKILL');
}

export const liveCount = (): number => live.size;

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

/** HTTP status of a GET, 0 on any failure. */
export async function httpStatus(url: string, timeoutMs = 1_000): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

export async function httpText(url: string, timeoutMs = 1_000): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.text();
    return res.status === 200 ? text : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Polls `GET url` until it answers 200.
 * @throws when the process exits first or `timeoutMs` passes (with its output tail).
 */
export async function waitReady(t: Tracked, url: string, timeoutMs: number, stepMs = 50): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (!isRunning(t)) throw new Error(`${t.role} (pid ${t.pid}) exited before it was ready:\n${t.tail.join('\n')}`);
    if ((await httpStatus(url, 1_000)) === 200) return;
    await sleep(stepMs);
  }
  throw new Error(`${t.role} (pid ${t.pid}) was not ready within ${timeoutMs} ms:\n${t.tail.join('\n')}`);
}

/** Linux clock ticks per second for /proc/PID/stat (USER_HZ, 100 on every mainstream kernel). */
const CLK_TCK = 100;

/**
 * CPU seconds (user + system, all threads) of a process from /proc/PID/stat;
 * undefined where /proc is missing or the process is gone.
 */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised name: state is 3rd of the line, utime the 14th, stime the 15th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
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
