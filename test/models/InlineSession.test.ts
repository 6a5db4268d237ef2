/**
 * A model run on the node's own thread (iris): the same contract as an
 * inference thread. Runs handed over back to back come back in order, an
 * urgent one first, each naming the run started next; stop lets the run in
 * progress end; injected faults end the session as they end a thread.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InlineSession } from '../../src/models/InlineSession.js';
import { resolveModels } from '../../src/models/registry.js';
import type { ThreadTensor } from '../../src/models/threadProtocol.js';

const [spec] = resolveModels(['iris']);
const input = (rows: number, value = 0.5): Record<string, ThreadTensor> => ({
  input: { dtype: 'float32', shape: [rows, 4], buffer: new Float32Array(rows * 4).fill(value).buffer },
});

const sessions: InlineSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((s) => s.terminate()));
});

async function start(poisonValue?: number): Promise<InlineSession> {
  const s = await InlineSession.start(spec!.path, 1, poisonValue === undefined ? {} : { poisonValue });
  sessions.push(s);
  return s;
}

const settledAs = (ps: Promise<unknown>[]) => Promise.allSettled(ps).then((r) => r.map((x) => x.status));

describe('InlineSession', () => {
  it('is where iris runs by default, and --inline-models moves a model on or off the node\'s thread', () => {
    expect(spec!.execution).toBe('inline');
    expect(resolveModels(['text-orientation'])[0]!.execution).toBe('thread');
    expect(resolveModels(['iris', 'text-orientation'], { inlineModels: [] }).map((m) => m.execution)).toEqual(['thread', 'thread']);
    expect(resolveModels(['iris', 'text-orientation'], { inlineModels: ['text-orientation'] }).map((m) => m.execution)).toEqual(['thread', 'inline']);
    expect(() => resolveModels(['iris'], { inlineModels: ['iriss'] })).toThrow(/unknown model "iriss" to run inline/);
  });

  it('runs batches handed over in one turn in order, an urgent one right after the first, each naming the run started next', async () => {
    const s = await start();
    const finished: number[] = [];
    const track = (p: ReturnType<InlineSession['run']>, id: number) => p.then((r) => (finished.push(id), r));
    const runs = [track(s.run(1, input(3)), 1), track(s.run(2, input(1)), 2), track(s.run(3, input(2)), 3), track(s.run(4, input(1), true), 4)];
    expect(s.runsHeld).toBe(4);
    const results = await Promise.all(runs);
    expect(finished).toEqual([1, 4, 2, 3]);
    // By id: 1 was followed by 4, 2 by 3, 3 by nothing, 4 by 2.
    expect(results.map((r) => r.next)).toEqual([4, 3, undefined, 2]);
    expect(results.map((r) => Object.values(r.outputs)[0]!.shape)).toEqual([[3, 3], [1, 3], [2, 3], [1, 3]]);
    const probs = new Float32Array(Object.values(results[0]!.outputs)[0]!.buffer);
    expect(probs[0]! + probs[1]! + probs[2]!).toBeCloseTo(1, 5);
    expect(s.runsHeld).toBe(0);
  });

  it('stop lets the run in progress end and drops the ones queued behind it; the session is then dead', async () => {
    const s = await start();
    const died = new Promise<Error>((resolve) => s.onDeath(resolve));
    const first = s.run(1, input(1));
    // The first run is picked after one turn of the loop; stop arrives while it is in progress.
    await new Promise((r) => setImmediate(r));
    const second = s.run(2, input(1));
    await s.stop(1_000);
    expect(await settledAs([first, second])).toEqual(['fulfilled', 'rejected']);
    expect((await died).message).toMatch(/stopped/);
    await expect(s.run(3, input(1))).rejects.toThrow(/stopped/);
  });

  it('a run that throws (injected, or on a poisoned input) is answered with its error and ends the session, failing the runs behind it', async () => {
    for (const make of [async () => { const s = await start(); s.inject('throwNext'); return s; }, () => start(9)]) {
      const s = await make();
      const died = new Promise<Error>((resolve) => s.onDeath(resolve));
      const failing = s.run(1, input(1, 9));
      const behind = s.run(2, input(1));
      await expect(failing).rejects.toThrow(/injected worker crash|poisoned input/);
      await expect(behind).rejects.toThrow(/failed run/);
      expect((await died).message).toMatch(/failed run/);
    }
  });

  it('a hung run holds the session until terminate, which fails it; an injected exit ends the session at once', async () => {
    const s = await start();
    s.inject('hangNext');
    const hung = s.run(1, input(1));
    await new Promise((r) => setTimeout(r, 50));
    expect(s.runsHeld).toBe(1);
    await s.terminate();
    await expect(hung).rejects.toThrow(/terminated/);

    const t = await start();
    const died = new Promise<Error>((resolve) => t.onDeath(resolve));
    t.inject('exit');
    expect((await died).message).toMatch(/exited/);
    await expect(t.run(1, input(1))).rejects.toThrow(/exited/);
  });
});
