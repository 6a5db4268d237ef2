/**
 * Starts `actorserve node` as a real child process and stops it by its own
 * pid. Reads the pino `listening` line to learn the port.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../bin/actorserve.js', import.meta.url));

export interface NodeProcess {
  proc: ChildProcess;
  port: number;
  url: string;
  /** Every stdout line, parsed when it is JSON. */
  lines: unknown[];
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function spawnNode(args: string[], timeoutMs = 30_000, env: NodeJS.ProcessEnv = {}): Promise<NodeProcess> {
  const proc = spawn(process.execPath, [BIN, 'node', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const lines: unknown[] = [];
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    const timer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop('SIGKILL');
      reject(new Error(`node did not start within ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`node exited with ${code} before listening; stderr: ${stderr}`));
    });
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      let parsed: unknown = line;
      try {
        parsed = JSON.parse(line);
      } catch {
        // not a log line; keep the text
      }
      lines.push(parsed);
      const rec = parsed as { msg?: string; port?: number };
      if (rec?.msg === 'listening' && typeof rec.port === 'number') {
        clearTimeout(timer);
        resolve({ proc, port: rec.port, url: `ws://127.0.0.1:${rec.port}/v1/stream`, lines, stop });
      }
    });
  });
}
