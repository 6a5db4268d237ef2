import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readdirSync, readFileSync } from 'node:fs';
import { parseLogLine } from '../cluster/child.js';
import { BIN, spawnNode } from './helpers/spawnNode.js';
import { RawClient, irisInput } from './helpers/RawClient.js';

const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('the actorserve command', () => {
  it('documents its commands and flags under --help and exits 0', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const flag of ['node', '--port', '--node-id', '--models', '--workers', '--log-level']) expect(r.stdout).toContain(flag);
  });

  it('refuses an unknown flag or a bad value with exit code 2 and the reason', () => {
    const unknown = run('node', '--bogus');
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/bogus/);
    const badPort = run('node', '--port', 'eighty');
    expect(badPort.status).toBe(2);
    expect(badPort.stderr).toMatch(/--port/);
    const badModel = run('node', '--port', '0', '--models', 'nope');
    expect(badModel.status).toBe(2);
    expect(badModel.stderr).toMatch(/unknown model "nope"/);
  });

  it('starts a node that serves results stamped with its node id, logs JSON, and stops cleanly on SIGTERM', async () => {
    const n = await spawnNode(['--port', '0', '--node-id', 'cli-node', '--models', 'iris']);
    try {
      const c = await RawClient.connect(n.url);
      expect(c.welcome.node).toBe('cli-node');
      expect(c.welcome.models.map((m) => m.name)).toEqual(['iris']);
      const r = await c.request({ id: 1, model: 'iris', inputs: irisInput([6.3, 3.3, 6.0, 2.5]) });
      expect(r.t).toBe('result');
      expect(r.t === 'result' && r.node).toBe('cli-node');
      const ready = await fetch(`http://127.0.0.1:${n.port}/v2/health/ready`);
      expect(ready.status).toBe(200);
      c.close();
    } finally {
      expect(await n.stop('SIGTERM')).toBe(0);
    }
    expect(n.lines.every((l) => typeof l === 'object' && l !== null && 'level' in l)).toBe(true);
  });

  it('exits 0 with a log line on SIGTERM while its models are still loading, not killed by the signal', async () => {
    const child = spawn(process.execPath, [BIN, 'node', '--port', '0', '--node-id', 'early-term', '--models', 'text-orientation'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const lines: Record<string, unknown>[] = [];
      // 'close', not 'exit': every stdout line has been read by then.
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
      const settings = new Promise<void>((resolve) => {
        createInterface({ input: child.stdout }).on('line', (line) => {
          const l = parseLogLine(line);
          if (l === undefined) return;
          lines.push(l);
          if (l['msg'] === 'V8 collector settings') resolve(); // logged before the node starts
        });
      });
      await settings;
      child.kill('SIGTERM');
      expect(await exited).toEqual({ code: 0, signal: null });
      expect(lines.find((l) => l['msg'] === 'leaving on signal')).toMatchObject({ signal: 'SIGTERM', started: false });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  });

  it.runIf(process.platform === 'linux')('runs inference threads at --inference-nice and the event loop at the node\'s own priority', async () => {
    // iris runs on the node's own thread by default: put it on a worker thread, whose nice is under test.
    const n = await spawnNode(['--port', '0', '--node-id', 'nice-node', '--models', 'iris', '--inline-models', 'none', '--threads', '2', '--inference-nice', '7']);
    try {
      const c = await RawClient.connect(n.url);
      expect((await c.request({ id: 1, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) })).t).toBe('result');
      c.close();
      // Field 19 of /proc/PID/task/TID/stat is the thread's nice; the command name in field 2 may hold spaces.
      const niceOf = (tid: string) => Number(readFileSync(`/proc/${n.proc.pid}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16]);
      const nices = readdirSync(`/proc/${n.proc.pid}/task`).map((tid) => ({ tid, nice: niceOf(tid) }));
      expect(nices.find((t) => t.tid === String(n.proc.pid))?.nice).toBe(0);
      // The worker_thread that owns the session and onnxruntime's second intra-op thread, created from it.
      expect(nices.filter((t) => t.nice === 7).length).toBeGreaterThanOrEqual(2);
    } finally {
      expect(await n.stop('SIGTERM')).toBe(0);
    }
  });
});
