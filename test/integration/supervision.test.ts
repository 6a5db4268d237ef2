/**
 * Supervision of real worker threads: strategies, restart intensity, and
 * what happens to queued work when a model's supervisor gives up.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ActorserveNode } from '../../src/actors/Node.js';
import { createLogger } from '../../src/log.js';
import { resolveModels } from '../../src/models/registry.js';
import type { ErrorFrame, ResultFrame } from '../../src/transport/protocol.js';
import { RawClient } from '../helpers/RawClient.js';
import { eventually } from '../helpers/cluster.js';

const nodes: ActorserveNode[] = [];
afterEach(async () => {
  await Promise.all(nodes.splice(0).map((n) => n.stop()));
});

const IMG = 3 * 48 * 192;
const image = new Uint8Array(new Float32Array(IMG).fill(0.5).buffer);
const infer = (id: string) => ({ t: 'infer', id, model: 'text-orientation', inputs: { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: image } } });
const silent = createLogger({ level: 'silent' });

async function start(nodeId: string, extra: Partial<Parameters<typeof ActorserveNode.start>[0]> = {}) {
  const models = resolveModels(['text-orientation'], { workers: 2, intraOpThreads: 1 });
  const node = await ActorserveNode.start({ nodeId, port: 0, models, chaos: true, log: silent, ...extra });
  nodes.push(node);
  await eventually(async () => threadIds(node).every((id) => id !== undefined), 20_000);
  return node;
}

const threadIds = (node: ActorserveNode) => node.models.get('text-orientation')!.workers.map((w) => w.thread()?.threadId);

describe('a model supervisor', () => {
  it('under one_for_one restarts only the crashed worker, and its batch still gets answered', async () => {
    const node = await start('o41', { supervision: { strategy: 'one_for_one' } });
    const before = threadIds(node);
    const c = await RawClient.connect(node.url);
    node.chaos.workerFault('text-orientation', 0, 'exit');
    await eventually(async () => threadIds(node)[0] !== undefined && threadIds(node)[0] !== before[0], 10_000);
    const after = threadIds(node);
    expect(after[1]).toBe(before[1]);
    const replies = await Promise.all(Array.from({ length: 8 }, (_, i) => c.request(infer(`r${i}`))));
    expect(replies.every((f) => f.t === 'result')).toBe(true);
    c.close();
  });

  it('under one_for_all restarts every worker when one crashes, losing no request in flight', async () => {
    const node = await start('o4a', { supervision: { strategy: 'one_for_all' } });
    const before = threadIds(node);
    const c = await RawClient.connect(node.url);
    const inFlight = Array.from({ length: 24 }, (_, i) => c.request(infer(`f${i}`)));
    node.chaos.workerFault('text-orientation', 0, 'throwNext');
    const replies = await Promise.all(inFlight);
    expect(replies.map((f) => f.t)).toEqual(replies.map(() => 'result'));
    await eventually(async () => {
      const now = threadIds(node);
      return now.every((id, i) => id !== undefined && id !== before[i]);
    }, 10_000);
    c.close();
  });

  it('gives up past its restart intensity: the model is withdrawn and its requests are answered unavailable, not lost', async () => {
    const node = await start('give-up', { supervision: { intensity: 1, periodMs: 60_000, backoff: { initialMs: 0, maxMs: 0, factor: 1 } } });
    const c = await RawClient.connect(node.url);
    const first = threadIds(node)[0];
    node.chaos.workerFault('text-orientation', 0, 'exit');
    await eventually(async () => threadIds(node)[0] !== undefined && threadIds(node)[0] !== first, 10_000);
    node.chaos.workerFault('text-orientation', 0, 'exit'); // second restart in the window: over intensity 1
    await eventually(async () => Object.values((await node.batcherStats('text-orientation')).workers).every((s) => s === 'stopped'), 10_000);
    const f = (await c.request(infer('late'))) as ErrorFrame;
    expect(f.t).toBe('error');
    expect(f.code).toBe('unavailable');
    expect(node.clusterView().find((m) => m.nodeId === 'give-up')!.models).toEqual([]);
    c.close();
  });

  it('hands its queue to the same model on another node when it gives up, so the origin still gets results', async () => {
    const secret = 'sup-test';
    const b = await start('sup-b', { clusterSecret: secret });
    const a = await start('sup-a', {
      clusterSecret: secret,
      seeds: [`127.0.0.1:${b.port}`],
      supervision: { intensity: 0, periodMs: 60_000 },
    });
    await eventually(async () => a.clusterView().filter((m) => m.status === 'up' && m.linked).length === 2, 10_000);
    const c = await RawClient.connect(a.url);
    const replies = Array.from({ length: 30 }, (_, i) => c.request(infer(`q${i}`)));
    a.chaos.workerFault('text-orientation', 0, 'exit'); // intensity 0: the first crash gives up
    const frames = (await Promise.all(replies)) as (ResultFrame | ErrorFrame)[];
    expect(frames.filter((f) => f.t === 'error').map((f) => (f as ErrorFrame).message)).toEqual([]);
    expect(frames.some((f) => f.t === 'result' && f.node === 'sup-b')).toBe(true);
    // Later requests on A's connection go straight to B.
    const later = (await c.request(infer('later'))) as ResultFrame;
    expect(later.node).toBe('sup-b');
    c.close();
  });
});
