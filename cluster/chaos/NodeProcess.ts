/**
 * One `actorserve node` child process for the chaos suite: started, signalled
 * and stopped by its own pid, its pino stdout kept as events with their
 * arrival time on this process's monotonic clock (so they line up with the
 * moments faults were injected).
 *
 * Every process started here is remembered until it exits, and
 * `killAllNodesSync()` SIGKILLs what is left: the suite calls it on exit and
 * on Ctrl-C, so an aborted run leaves nothing behind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { projectRoot } from '../../src/models/registry.js';

export const BIN = join(projectRoot, 'bin', 'actorserve.js');

/** A pino line as the node writes it. */
export interface LogLine {
  level?: number;
  msg?: string;
  [key: string]: unknown;
}

export interface NodeEvent {
  /** performance.now() in this process when the line arrived. */
  at: number;
  line: LogLine;
}

/** pino's warn level; lines at or above it are always kept. */
const WARN = 40;
/** Info lines worth keeping: membership, routing and supervision. */
const KEPT_INFO = new Set(['listening', 'peer joined', 'peer link closed', 're-routing work sent to a lost node', 'leaving on signal', 'leaving: draining', 'left']);
/** Cap on kept events per process: a crash-looping node must not grow the runner without end. */
const MAX_EVENTS = 20_000;

const live = new Set<ChildProcess>();

/** SIGKILLs every node process this module started that has not exited yet (by pid). */
export function killAllNodesSync(): void {
  for (const p of live) {
    try {
      // A stopped (SIGSTOP) process still dies of SIGKILL.
      p.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
}

export interface NodeStart {
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the `listening` line. Default 60 000 ms. */
  timeoutMs?: number;
}

export class NodeProcess {
  readonly events: NodeEvent[] = [];
  readonly exited: Promise<number | null>;
  private stderr = '';
  private exitCode: number | null | undefined;
  private exitSignal: NodeJS.Signals | null = null;
  /** Whether we sent it SIGKILL (an exit we caused, not one to report). */
  private killedByUs = false;

  private constructor(readonly proc: ChildProcess) {
    this.exited = new Promise((resolve) =>
      proc.once('exit', (code, signal) => {
        live.delete(proc);
        this.exitCode = code;
        this.exitSignal = signal;
        resolve(code);
      }),
    );
    proc.stderr!.on('data', (d: Buffer) => {
      if (this.stderr.length < 64 * 1024) this.stderr += d.toString();
    });
  }

  get pid(): number {
    return this.proc.pid!;
  }

  get alive(): boolean {
    return this.exitCode === undefined;
  }

  get stderrText(): string {
    return this.stderr;
  }

  /** How it ended, when it ended without us killing it (a crash to report); undefined while running or after our SIGKILL. */
  get unexpectedExit(): string | undefined {
    if (this.alive || this.killedByUs) return undefined;
    const tail = this.stderr.trim().split('\n').slice(-5).join(' | ');
    return `exited ${this.exitSignal ? `by ${this.exitSignal}` : `with code ${this.exitCode}`}${tail ? `; stderr: ${tail}` : ''}`;
  }

  /**
   * Spawns `node bin/actorserve.js node ARGS` and resolves once it logs
   * `listening`.
   * @throws Error when it exits first or is not listening within the timeout (it is killed).
   */
  static start(o: NodeStart): Promise<NodeProcess> {
    const proc = spawn(process.execPath, [BIN, 'node', ...o.args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
    live.add(proc);
    const node = new NodeProcess(proc);
    const timeoutMs = o.timeoutMs ?? 60_000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        void node.kill();
        reject(new Error(`node did not start within ${timeoutMs} ms; stderr: ${node.stderr}`));
      }, timeoutMs);
      void node.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`node exited with ${code} before listening; stderr: ${node.stderr}`));
      });
      createInterface({ input: proc.stdout! }).on('line', (text) => {
        let line: LogLine;
        try {
          line = JSON.parse(text) as LogLine;
        } catch {
          return;
        }
        if (line.msg === 'listening') {
          clearTimeout(timer);
          resolve(node);
        }
        if ((line.level ?? 0) >= WARN || KEPT_INFO.has(line.msg ?? '')) {
          if (node.events.length >= MAX_EVENTS) node.events.splice(0, MAX_EVENTS / 2);
          node.events.push({ at: performance.now(), line });
        }
      });
    });
  }

  /** Events whose message matches, that arrived at or after `since`. */
  eventsSince(since: number, msg?: string | RegExp): NodeEvent[] {
    return this.events.filter((e) => e.at >= since && (msg === undefined || (typeof msg === 'string' ? e.line.msg === msg : msg.test(e.line.msg ?? ''))));
  }

  /** Sends a signal to this process by its pid; false when it has exited. */
  signal(sig: NodeJS.Signals): boolean {
    if (!this.alive) return false;
    if (sig === 'SIGKILL') this.killedByUs = true;
    try {
      return this.proc.kill(sig);
    } catch {
      return false;
    }
  }

  /** SIGKILLs the process (stopped or not) and waits for it to be gone. */
  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.exited;
  }
}

export { freePorts } from '../ports.js';
