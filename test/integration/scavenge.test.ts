/**
 * Scavenges on the event loop's thread alone on few cores (src/scavenge.ts):
 * the setting reaches V8 (its own trace shows whether helper threads took part
 * in each scavenge), `auto` picks by core count, and a bad value is a usage
 * error at start-up.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { usableCores } from '../../src/cores.js';
import { parallelScavengeFor } from '../../src/scavenge.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

const started: NodeProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((n) => n.stop('SIGKILL')));
});

const SCAVENGE_JS = fileURLToPath(new URL('../../dist/src/scavenge.js', import.meta.url));

/**
 * Runs five scavenges of a young generation with 200 000 more live objects each
 * time, after `applyParallelScavenge(setting, cores)`, and returns what it
 * returned and the helper threads' ms in each scavenge (`--trace-gc-nvp`'s
 * `background.scavenge.parallel`).
 */
function scavengesAfter(setting: string, cores: number): { parallel: boolean; helperMs: number[] } {
  const out = execFileSync(process.execPath, ['--expose-gc', '--trace-gc-nvp', '--input-type=module', '-e',
    `const m = await import(${JSON.stringify(SCAVENGE_JS)});
     console.log('parallel=' + m.applyParallelScavenge(${JSON.stringify(setting)}, ${cores}));
     const keep = [];
     for (let r = 0; r < 5; r++) { for (let i = 0; i < 200_000; i++) keep.push({ i }); gc({ type: 'minor' }); }`], { encoding: 'utf8' });
  const helperMs = [...out.matchAll(/ gc=s .* background\.scavenge\.parallel=([0-9.]+)/g)].map((m) => Number(m[1]));
  return { parallel: /^parallel=true$/m.test(out), helperMs };
}

describe('parallel scavenge', () => {
  it('auto: helper threads above 2 cores, the main thread alone at 2 or fewer; on and off whatever the cores', () => {
    expect([1, 2, 3, 16].map((c) => parallelScavengeFor('auto', c))).toEqual([false, false, true, true]);
    expect([1, 16].map((c) => parallelScavengeFor('on', c))).toEqual([true, true]);
    expect([1, 16].map((c) => parallelScavengeFor('off', c))).toEqual([false, false]);
  });

  it('reaches V8: with helpers off no scavenge has background work, with them on the same scavenges do', () => {
    const off = scavengesAfter('auto', 2);
    expect(off.parallel).toBe(false);
    expect(off.helperMs.length).toBeGreaterThanOrEqual(5);
    expect(off.helperMs.every((ms) => ms === 0)).toBe(true);
    const on = scavengesAfter('on', 2);
    expect(on.parallel).toBe(true);
    expect(on.helperMs.length).toBeGreaterThanOrEqual(5);
    expect(on.helperMs.some((ms) => ms > 0)).toBe(true);
  });

  it('refuses a value other than auto, on or off with a usage error', async () => {
    await expect(spawnNode(['--port', '0', '--models', 'iris', '--parallel-scavenge', 'yes'])).rejects.toThrow(/parallel scavenge must be one of auto, on, off, got "yes"/);
  });

  it('tells in its start-up log what it set: by this machine\'s usable cores when auto, as asked otherwise', async () => {
    const cores = usableCores();
    for (const [args, expected] of [[[], cores > 2], [['--parallel-scavenge', 'on'], true], [['--parallel-scavenge', 'off'], false]] as const) {
      const node = await spawnNode(['--port', '0', '--models', 'iris', ...args]);
      started.push(node);
      const line = node.lines.find((l) => (l as { msg?: unknown } | null)?.msg === 'V8 collector settings');
      expect(line).toMatchObject({ parallelScavenge: expected, cores, heapGrowthPercent: 300 });
      await node.stop('SIGKILL');
    }
  });
});
