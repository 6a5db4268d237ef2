/**
 * The main-thread handle on an inference thread: runs handed over back to
 * back come back in order (urgent ones first), and stopping a thread mid-run lets that run end
 * (terminating it there would abort the whole process inside onnxruntime).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { InferenceThread } from '../../src/models/InferenceThread.js';
import { resolveModels } from '../../src/models/registry.js';
import type { ThreadTensor } from '../../src/models/threadProtocol.js';

const [spec] = resolveModels(['text-orientation']);
const ROW = 3 * 48 * 192;
const input = (rows: number, value: number): Record<string, ThreadTensor> => ({
  x: { dtype: 'float32', shape: [rows, 3, 48, 192], buffer: new Float32Array(rows * ROW).fill(value).buffer },
});

const threads: InferenceThread[] = [];
afterEach(async () => {
  await Promise.all(threads.splice(0).map((t) => t.terminate()));
});

async function start(): Promise<InferenceThread> {
  const t = await InferenceThread.start(spec!.path, 1, 0);
  threads.push(t);
  return t;
}

describe('InferenceThread', () => {
  it('runs batches handed over back to back, in order, each answered with its own outputs', async () => {
    const t = await start();
    const finished: number[] = [];
    const runs = [1, 2, 3].map((id) =>
      t.run(id, input(id, id / 10)).then((r) => {
        finished.push(id);
        return r;
      }),
    );
    const results = await Promise.all(runs);
    expect(finished).toEqual([1, 2, 3]);
    expect(results.map((r) => Object.values(r.outputs)[0]!.shape[0])).toEqual([1, 2, 3]);
  });

  it('an urgent run handed over behind staged ones runs right after the one in progress, and each result names the run its thread started next', async () => {
    const t = await start();
    const finished: number[] = [];
    const track = (p: ReturnType<InferenceThread['run']>, id: number) => p.then((r) => (finished.push(id), r));
    // Run 1 is long enough that 2, 3 and the urgent 4 all reach the thread while it runs.
    const runs = [track(t.run(1, input(16, 0.1)), 1), track(t.run(2, input(1, 0.2)), 2), track(t.run(3, input(1, 0.3)), 3), track(t.run(4, input(1, 0.4), true), 4)];
    const results = await Promise.all(runs);
    expect(finished).toEqual([1, 4, 2, 3]);
    // By id: 1 was followed by 4, 2 by 3, 3 by nothing, 4 by 2.
    expect(results.map((r) => r.next)).toEqual([4, 3, undefined, 2]);
  });

  it('hands each run\'s input buffer back with its result, whole, and a run on a buffer handed back reads only what was written into it', async () => {
    const t = await start();
    const first = input(2, 0.25);
    const sent = first['x']!.buffer;
    const a = await t.run(1, first);
    expect(sent.byteLength).toBe(0); // moved to the thread, not copied
    expect(a.spent).toHaveLength(1);
    const back = a.spent![0]!;
    expect(back.byteLength).toBe(2 * ROW * 4);
    expect(new Float32Array(back).every((v) => v === 0.25)).toBe(true);
    // The same buffer, filled anew, gives what a fresh buffer of the same rows gives.
    new Float32Array(back).fill(0.75);
    const again = await t.run(2, { x: { dtype: 'float32', shape: [2, 3, 48, 192], buffer: back } });
    const fresh = await t.run(3, input(2, 0.75));
    const probs = (r: typeof a) => [...new Float32Array(Object.values(r.outputs)[0]!.buffer)];
    expect(probs(again)).toEqual(probs(fresh));
    expect(probs(again)).not.toEqual(probs(a));
  });

  it('stop lets the run in progress finish, drops the staged ones, and ends the thread without taking the process down', async () => {
    const t = await start();
    const exited = new Promise<void>((resolve) => t.onDeath(() => resolve()));
    const runs = [1, 2, 3].map((id) => t.run(id, input(16, 0.5)));
    // Let the thread start the first run before it is told to stop.
    await new Promise((r) => setTimeout(r, 5));
    await t.stop(10_000);
    await exited;
    expect((await Promise.allSettled(runs)).map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected']);
    await expect(t.run(4, input(1, 0.5))).rejects.toThrow(/exited/);
  });
});
