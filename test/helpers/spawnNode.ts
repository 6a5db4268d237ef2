/**
 * Starts `actorserve node` as a real child process and stops it by its own
 * pid (cluster/child.ts). Reads the pino `listening` line to learn the port.
 */
import type { ChildProcess } from 'node:child_process';
import { ACTORSERVE_BIN, Child, parseLogLine } from '../../cluster/child.js';

export const BIN = ACTORSERVE_BIN;

export interface NodeProcess {
  proc: ChildProcess;
  port: number;
  url: string;
  /** Every stdout line, parsed when it is JSON. */
  lines: unknown[];
  /** Sends `signal` (default SIGTERM), SIGKILL after 10 s; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function spawnNode(args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}): Promise<NodeProcess> {
  const child = Child.node('actorserve node', args, { env: { ...process.env, ...env }, tailLines: 500 });
  const lines: unknown[] = [];
  child.onLine((line, stream) => {
    if (stream === 'stdout') lines.push(parseLogLine(line) ?? line);
  });
  const port = await child.listening(timeoutMs);
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => (await child.stop(10_000, signal)).exit.code;
  return { proc: child.proc, port, url: `ws://127.0.0.1:${port}/v1/stream`, lines, stop };
}
