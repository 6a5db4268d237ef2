/**
 * The shipped example (examples/scale.ts, built to dist/) run as users run it:
 * four real node processes, load through n1, n4 joining and leaving. It must
 * end with every request answered, n4 having served some, and no process left.
 */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Child } from '../../cluster/child.js';
import { projectRoot } from '../../src/models/registry.js';

const SCRIPT = join(projectRoot, 'dist', 'examples', 'scale.js');

describe('examples/scale', () => {
  let child: Child | undefined;
  afterAll(async () => {
    await child?.stop(5_000);
  });

  it('spreads work to a 4th node and loses nothing when it joins and leaves', async () => {
    child = Child.spawn('scale example', [SCRIPT], { tailLines: 200 });
    const output: string[] = [];
    child.onLine((line) => output.push(line));
    const exit = await Promise.race([child.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 110_000).unref())]);
    const text = output.join('\n');
    expect(exit, text).toEqual({ code: 0, signal: null });
    const count = (label: string) => Number(new RegExp(`^${label}\\s+(\\d+)`, 'm').exec(text)?.[1]);
    expect(count('n4'), text).toBeGreaterThan(0);
    expect(count('sent'), text).toBeGreaterThan(0);
    expect(count('results'), text).toBe(count('sent'));
    expect(count('errors'), text).toBe(0);
    expect(count('lost'), text).toBe(0);
    expect(text).toMatch(/^n4 leave\s+code 0/m);
    expect(text).toMatch(/all 4 node processes are gone/);
    expect(text).toMatch(/^RESULT\s+OK/m);
  }, 120_000);
});
