/**
 * Child processes of the local-machine tools (the chaos suite, the bench, the
 * scale example, the tests): each is registered while it runs and signalled
 * by its own pid, its last output lines kept for error messages, and
 * `killAllChildrenSync()` SIGKILLs whatever is left (on exit, on Ctrl-C, on
 * an uncaught error), so an aborted run leaves nothing behind.
 */
import { fork, spawn, type ChildProcess, type ForkOptions, type SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { projectRoot } from '../src/models/registry.js';
import { OLD_SPACE_FLOOR_FLAG } from '../src/heapGrowth.js';

export const ACTORSERVE_BIN = join(projectRoot, 'bin', 'actorserve.js');

export interface ChildExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export const describeExit = (e: ChildExit): string => (e.signal !== null ? `signal ${e.signal}` : `code ${e.code}`);

export interface ChildOptions {
  /** Output lines kept (stdout and stderr together). Default 30. */
  tailLines?: number;
}

/** Told each line a child writes, as it arrives. */
export type LineListener = (line: string, stream: 'stdout' | 'stderr') => void;

const live = new Set<Child>();
/** Every process started here, in start order, kept after they exit (the bench report lists them). */
export const startedChildren: { role: string; pid: number }[] = [];

export class Child {
  readonly pid: number;
  /** performance.now() in this process when it was spawned. */
  readonly startedAt = performance.now();
  /** Its last output lines, stdout and stderr together. */
  readonly tail: string[] = [];
  readonly exited: Promise<ChildExit>;
  private exit: ChildExit | undefined;
  private listeners: LineListener[] = [];

  private constructor(
    readonly proc: ChildProcess,
    readonly role: string,
    tailLines: number,
  ) {
    if (proc.pid === undefined) throw new Error(`could not start ${role}`);
    this.pid = proc.pid;
    // 'close', not 'exit': by then its output has been read to the end, so the tail holds its last words.
    this.exited = new Promise((resolve) =>
      proc.once('close', (code, signal) => {
        live.delete(this);
        this.exit = { code, signal };
        resolve(this.exit);
      }),
    );
    for (const [stream, input] of [['stdout', proc.stdout], ['stderr', proc.stderr]] as const) {
      if (!input) continue;
      createInterface({ input }).on('line', (line) => {
        this.tail.push(line);
        if (this.tail.length > tailLines) this.tail.shift();
        for (const l of this.listeners) l(line, stream);
      });
    }
    live.add(this);
    startedChildren.push({ role, pid: this.pid });
  }

  /** Spawns `node ARGS`, stdout and stderr piped. */
  static spawn(role: string, args: string[], opts: SpawnOptions & ChildOptions = {}): Child {
    const { tailLines = 30, ...spawnOpts } = opts;
    return new Child(spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnOpts }), role, tailLines);
  }

  /** Spawns `node --initial-old-space-size=… bin/actorserve.js node ARGS` (the flag: src/heapGrowth.ts). */
  static node(role: string, args: string[], opts: SpawnOptions & ChildOptions = {}): Child {
    return Child.spawn(role, [OLD_SPACE_FLOOR_FLAG, ACTORSERVE_BIN, 'node', ...args], opts);
  }

  /** Forks a Node module with an IPC channel. */
  static fork(role: string, modulePath: string, args: string[] = [], opts: ForkOptions & ChildOptions = {}): Child {
    const { tailLines = 30, ...forkOpts } = opts;
    return new Child(fork(modulePath, args, { stdio: ['ignore', 'pipe', 'pipe', 'ipc'], execArgv: [], ...forkOpts }), role, tailLines);
  }

  /** Calls `listener` with every line written from now on, until the function it returns is called. */
  onLine(listener: LineListener): () => void {
    // New arrays, never changed in place: a listener that leaves while a line is handed out skips no other.
    this.listeners = [...this.listeners, listener];
    return () => {
      this.listeners = this.listeners.filter((l) => l !== listener);
    };
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  /** How it ended; undefined while it runs. */
  get exitStatus(): ChildExit | undefined {
    return this.exit;
  }

  /** Sends a signal by pid; false when it has exited. */
  signal(sig: NodeJS.Signals): boolean {
    if (!this.running) return false;
    try {
      process.kill(this.pid, sig);
      return true;
    } catch {
      return false; // gone meanwhile
    }
  }

  /**
   * Sends `sig` (default SIGTERM: an actorserve node leaves gracefully) and
   * SIGKILL after `graceMs`; resolves once it has exited.
   */
  async stop(graceMs = 5_000, sig: NodeJS.Signals = 'SIGTERM'): Promise<{ exit: ChildExit; ms: number; killed: boolean }> {
    const start = performance.now();
    let killed = false;
    this.signal(sig);
    const timer = setTimeout(() => (killed = this.signal('SIGKILL')), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    return { exit, ms: performance.now() - start, killed };
  }

  /** SIGKILL (stopped or not: a SIGSTOPped process still dies of it); resolves once it has exited. */
  kill(): Promise<ChildExit> {
    this.signal('SIGKILL');
    return this.exited;
  }

  /**
   * The port an actorserve node logs in its pino `listening` line.
   * @throws Error when it exits first or logs nothing of the kind within `timeoutMs` (it is then killed).
   */
  listening(timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (outcome: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        stopListening();
        outcome();
      };
      const fail = (why: string) => settle(() => reject(new Error(`${this.role} (pid ${this.pid}) ${why}:\n${this.tail.join('\n')}`)));
      const timer = setTimeout(() => {
        void this.kill();
        fail(`did not start within ${timeoutMs} ms`);
      }, timeoutMs);
      void this.exited.then((e) => fail(`exited with ${describeExit(e)} before listening`));
      const stopListening = this.onLine((line, stream) => {
        const rec = stream === 'stdout' ? parseLogLine(line) : undefined;
        if (rec?.msg === 'listening' && typeof rec['port'] === 'number') settle(() => resolve(rec['port'] as number));
      });
    });
  }

  /**
   * Polls `GET url` until it answers 200.
   * @throws Error when the process exits first, `timeoutMs` passes (with its output tail) or `signal` aborts.
   */
  async ready(url: string, timeoutMs: number, { stepMs = 50, signal }: { stepMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    const until = performance.now() + timeoutMs;
    while (performance.now() < until) {
      if (!this.running) throw new Error(`${this.role} (pid ${this.pid}) exited before it was ready:\n${this.tail.join('\n')}`);
      if (signal?.aborted === true) throw new Error(`interrupted while waiting for ${this.role} to be ready`);
      if ((await httpStatus(url, 1_000)) === 200) return;
      await new Promise((r) => setTimeout(r, stepMs));
    }
    throw new Error(`${this.role} (pid ${this.pid}) was not ready within ${timeoutMs} ms:\n${this.tail.join('\n')}`);
  }
}

/** A pino line as a node writes it. */
export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

/** The line as a pino record, or undefined when it is not a JSON object. */
export function parseLogLine(text: string): LogLine | undefined {
  if (!text.startsWith('{')) return undefined;
  try {
    return JSON.parse(text) as LogLine;
  } catch {
    return undefined;
  }
}

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

/** Last resort (exit, Ctrl-C, an uncaught error): SIGKILL each live child by its pid, synchronously. */
export function killAllChildrenSync(): void {
  for (const c of live) c.signal('SIGKILL');
}

/** Stops every live child at once (see {@link Child.stop}). */
export async function stopAllChildren(graceMs = 5_000): Promise<void> {
  await Promise.all([...live].map((c) => c.stop(graceMs)));
}

export const liveChildren = (): number => live.size;
