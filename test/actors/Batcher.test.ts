/**
 * The batcher actor's use of the tensor arena, on nact with no workers: what
 * it queues it copies into the arena, and what it lets go it gives back, the
 * tensors of a request handed to the router copied out first.
 */
import { dispatch, spawn, start, stop, type Ref } from 'nact';
import { describe, expect, it } from 'vitest';
import { admit } from '../../src/actors/admit.js';
import { spawnBatcher } from '../../src/actors/Batcher.js';
import type { BatcherActorMsg, InferRequest, SessionMsg } from '../../src/actors/messages.js';
import { TensorArena } from '../../src/actors/tensorArena.js';
import { createLogger } from '../../src/log.js';
import { resolveModels } from '../../src/models/registry.js';
import { eventually } from '../helpers/cluster.js';

const spec = resolveModels(['text-orientation'])[0]!;
const models = new Map([[spec.name, spec]]);
const IMG_BYTES = 3 * 48 * 192 * 4;

const CHUNK_BYTES = 128 * 1024;
/** Waits (up to 5 s) for the actor to have done what `done` looks for; the assertions after it say what went wrong. */
const settled = (done: () => boolean) => eventually(async () => done(), 5_000, 5).catch(() => undefined);
const request = (i: number, replyTo: Ref<SessionMsg>): InferRequest =>
  admit(models, {
    t: 'infer',
    id: i,
    model: spec.name,
    inputs: { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: new Uint8Array(IMG_BYTES).fill(i) } },
  }, `test/1/${i}`, replyTo);

function batcherWithArena(handoff: (req: InferRequest) => void) {
  const system = start();
  const replies: SessionMsg[] = [];
  const session = spawn(system, (s: null, msg: SessionMsg) => (replies.push(msg), s)) as Ref<SessionMsg>;
  const arena = new TensorArena(64 * 1024 * 1024);
  // Its one worker never says it is ready: everything stays queued until the batcher lets it go.
  const batcher = spawnBatcher(system, {
    spec, nodeId: 'n1', workerNames: ['worker-0'], workers: new Map(), log: createLogger({ level: 'silent' }), arena,
    handoff: (req) => handoff(req),
  }) as Ref<BatcherActorMsg>;
  return { system, session, arena, batcher, replies };
}

describe('a batcher with a tensor arena', () => {
  it('copies what it queues into the arena and gives it back when it answers (here: cancelled)', async () => {
    const { system, session, arena, batcher, replies } = batcherWithArena(() => undefined);
    const reqs = [1, 2, 3].map((i) => request(i, session));
    const frames = reqs.map((r) => r.inputs['x']!.data.buffer);
    for (const r of reqs) dispatch(batcher, { t: 'enqueue', req: r });
    await settled(() => arena.lentOut === 3 * CHUNK_BYTES);
    expect(arena.lentOut).toBe(3 * CHUNK_BYTES);
    reqs.forEach((r, i) => {
      expect(r.inputs['x']!.data.buffer).not.toBe(frames[i]);
      expect(new Set(r.inputs['x']!.data)).toEqual(new Set([i + 1]));
    });
    for (const r of reqs) dispatch(batcher, { t: 'cancel', key: r.key });
    await settled(() => replies.length === 3 && arena.lentOut === 0);
    expect(replies.map((m) => (m.t === 'reply' && m.frame.t === 'error' ? m.frame.code : m.t))).toEqual(['cancelled', 'cancelled', 'cancelled']);
    expect(arena.lentOut).toBe(0);
    stop(system);
  });

  it('copies the tensors of what it hands to the router out of the arena, so reused chunks change nothing', async () => {
    const handed: InferRequest[] = [];
    const { system, session, arena, batcher } = batcherWithArena((req) => handed.push(req));
    for (const i of [1, 2, 3]) dispatch(batcher, { t: 'enqueue', req: request(i, session) });
    await settled(() => arena.lentOut === 3 * CHUNK_BYTES);
    dispatch(batcher, { t: 'drain' });
    await settled(() => handed.length === 3 && arena.lentOut === 0);
    expect(handed.map((r) => r.id)).toEqual([1, 2, 3]);
    expect(arena.lentOut).toBe(0);
    // The chunks go to new requests, with other bytes in them.
    for (const i of [7, 8, 9]) arena.hold(request(i, session));
    handed.forEach((r, i) => {
      expect(r.held).toBeUndefined();
      expect(new Set(r.inputs['x']!.data)).toEqual(new Set([i + 1]));
    });
    stop(system);
  });
});
