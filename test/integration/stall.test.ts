/**
 * A whole node stopped (SIGSTOP: a frozen container, a paused VM) for longer
 * than its hung-run watchdog, then resumed: the watchdog counts only the
 * time the node ran, so the worker whose run was in progress is not taken
 * for hung, nothing crashes and every request is answered.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { ErrorFrame, Priority, ResultFrame } from '../../src/transport/protocol.js';
import { RawClient } from '../helpers/RawClient.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

const started: NodeProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((n) => n.stop('SIGKILL')));
});

const RUN_TIMEOUT_MS = 1_000;
const STALL_MS = 2.5 * RUN_TIMEOUT_MS;
/** Whether a run is in progress at the moment of a stop is up to the scheduler: stop it several times. */
const STALLS = 3;
const IN_FLIGHT = 16;
/** The closed loop stops sending after this long, whatever happens. */
const LOOP_MAX_MS = 20_000;

const image = new Uint8Array(new Float32Array(3 * 48 * 192).fill(0.25).buffer);
const imageInfer = (id: string, priority: Priority = 'normal') => ({ t: 'infer', id, model: 'text-orientation', priority, inputs: { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: image } } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('a node stopped for longer than its run timeout', () => {
  it('keeps its workers on resume: no worker is killed as hung, every request is answered, and it serves again at once', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'stalled', '--models', 'text-orientation', '--run-timeout-ms', String(RUN_TIMEOUT_MS)]);
    started.push(node);
    const c = await RawClient.connect(node.url);

    // A closed loop keeps the inference thread busy, so a run is in progress when the node is stopped.
    let sending = true;
    const replies: Promise<ResultFrame | ErrorFrame>[] = [];
    const t0 = performance.now();
    const next = () => {
      if (!sending || performance.now() - t0 > LOOP_MAX_MS) return;
      const p = c.request(imageInfer(`r${replies.length}`));
      replies.push(p);
      // A refusal is retried after a pause (at most the wait it names).
      void p.then((f) => (f.t === 'error' ? setTimeout(next, Math.min(100, f.retryAfterMs ?? 100)) : next()), () => undefined);
    };
    for (let i = 0; i < IN_FLIGHT; i++) next();
    await sleep(500);
    let beforeLastResume = 0;
    for (let i = 0; i < STALLS; i++) {
      node.proc.kill('SIGSTOP');
      await sleep(STALL_MS);
      beforeLastResume = replies.length;
      node.proc.kill('SIGCONT');
      await sleep(500);
    }
    await sleep(1_000);
    sending = false;
    const all = await Promise.all(replies);
    c.close();

    // Every request is answered: with its result, or (only if this machine is itself starved of CPU)
    // refused overloaded with a wait to retry after. The batch that spanned a stall counts as one slow
    // sample in the drain estimate (BatcherLogic tests), so the stall alone refuses nothing.
    for (const f of all) if (f.t === 'error') expect([f.code, f.retryAfterMs! > 0]).toEqual(['overloaded', true]);
    expect(all.filter((f) => f.t === 'result').length).toBeGreaterThan(STALLS * IN_FLIGHT);
    expect(all.slice(beforeLastResume).filter((f) => f.t === 'result').length, 'results after the last resume').toBeGreaterThan(0);
    const crashes = node.lines.filter((l) => (l as { msg?: string }).msg === 'worker crashed');
    expect(crashes, JSON.stringify(crashes)).toEqual([]);
  });
});
