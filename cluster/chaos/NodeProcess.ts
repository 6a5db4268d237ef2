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
import { performance } from 'node:perf_hooks';
import { Child, killAllChildrenSync, parseLogLine, type LogLine } from '../child.js';

export type { LogLine };

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

/** SIGKILLs every node process this suite started that has not exited yet (by pid). */
export const killAllNodesSync = killAllChildrenSync;

export interface NodeStart {
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** How long to wait for the `listening` line. Default 60 000 ms. */
  timeoutMs?: number;
}

export class NodeProcess {
  readonly events: NodeEvent[] = [];
  /** Whether we sent it SIGKILL (an exit we caused, not one to report). */
  private killedByUs = false;

  private constructor(private readonly child: Child) {
    child.onLine((text, stream) => {
      const line = stream === 'stdout' ? parseLogLine(text) : undefined;
      if (line === undefined || ((line.level ?? 0) < WARN && !KEPT_INFO.has(line.msg ?? ''))) return;
      if (this.events.length >= MAX_EVENTS) this.events.splice(0, MAX_EVENTS / 2);
      this.events.push({ at: performance.now(), line });
    });
  }

  get pid(): number {
    return this.child.pid;
  }

  get alive(): boolean {
    return this.child.running;
  }

  /** How it ended, when it ended without us killing it (a crash to report); undefined while running or after our SIGKILL. */
  get unexpectedExit(): string | undefined {
    const exit = this.child.exitStatus;
    if (exit === undefined || this.killedByUs) return undefined;
    const tail = this.child.tail.slice(-5).join(' | ');
    return `exited ${exit.signal ? `by ${exit.signal}` : `with code ${exit.code}`}${tail ? `; output: ${tail}` : ''}`;
  }

  /**
   * Spawns `node bin/actorserve.js node ARGS` and resolves once it logs
   * `listening`.
   * @throws Error when it exits first or is not listening within the timeout (it is killed).
   */
  static async start(o: NodeStart): Promise<NodeProcess> {
    const node = new NodeProcess(Child.node('actorserve node', o.args, { env: { ...process.env, ...o.env } }));
    await node.child.listening(o.timeoutMs ?? 60_000);
    return node;
  }

  /** Events whose message matches, that arrived at or after `since`. */
  eventsSince(since: number, msg?: string | RegExp): NodeEvent[] {
    return this.events.filter((e) => e.at >= since && (msg === undefined || (typeof msg === 'string' ? e.line.msg === msg : msg.test(e.line.msg ?? ''))));
  }

  /** Sends a signal to this process by its pid; false when it has exited. */
  signal(sig: NodeJS.Signals): boolean {
    if (sig === 'SIGKILL' && this.alive) this.killedByUs = true;
    return this.child.signal(sig);
  }

  /** SIGKILLs the process (stopped or not) and waits for it to be gone. */
  async kill(): Promise<void> {
    this.signal('SIGKILL');
    await this.child.exited;
  }
}

export { freePorts } from '../ports.js';
