import { afterAll, describe, expect, it } from 'vitest';
import { RawClient, f32, irisInput } from '../helpers/RawClient.js';
import { eventually } from '../helpers/cluster.js';
import { Child } from '../../cluster/child.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

const started: NodeProcess[] = [];
afterAll(() => Promise.all(started.map((n) => n.stop('SIGKILL'))));

type Line = { msg?: string; reqId?: unknown; model?: unknown; node?: unknown; level?: number };

describe('logs', () => {
  it('are pino JSON lines, and every line about a request names its id, model and node', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'logs', '--models', 'iris', '--log-level', 'trace']);
    started.push(node);
    const c = await RawClient.connect(node.url);
    await c.request({ id: 'ok-1', model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) });
    await c.request({ id: 'bad-1', model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: f32([1]) } } });
    await c.request({ id: 'nf-1', model: 'nope', inputs: irisInput([1, 2, 3, 4]) });
    c.close();
    const lines = () => node.lines as Line[];
    await eventually(async () => ['ok-1', 'bad-1', 'nf-1'].every((id) => lines().some((l) => l.reqId === id)), 5_000);
    for (const l of lines()) {
      expect(typeof l, JSON.stringify(l)).toBe('object');
      expect(typeof l.level).toBe('number');
    }
    const about = lines().filter((l) => l.reqId !== undefined);
    expect(about.length).toBeGreaterThanOrEqual(3);
    for (const l of about) {
      expect(l.node, JSON.stringify(l)).toBe('logs');
      expect(typeof l.model, JSON.stringify(l)).toBe('string');
    }
    expect(about.find((l) => l.reqId === 'nf-1')!.model).toBe('nope');
  });

  it('are human-readable, not JSON, only when --log-pretty is asked for', async () => {
    const child = Child.node('pretty node', ['--port', '0', '--node-id', 'pretty', '--models', 'iris', '--log-pretty']);
    try {
      const line = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no listening line within 30 s')), 30_000);
        const stopListening = child.onLine((l, stream) => {
          if (stream === 'stdout' && l.includes('listening')) {
            clearTimeout(timer);
            stopListening();
            resolve(l);
          }
        });
      });
      expect(() => JSON.parse(line)).toThrow();
      expect(line).toMatch(/INFO/);
    } finally {
      await child.kill();
    }
  });
});
