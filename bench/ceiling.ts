/**
 * The in-process ceiling: onnxruntime-node on this thread with exactly the
 * node's session settings (model file, intra-op threads, sequential, no
 * spinning; from `resolveModels`), one session, back-to-back runs at each
 * batch size. No transport, no queue: what the hardware gives this model.
 */
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { newHistogram, recordMs, summarize, type LatencySummary } from './histogram.js';
import { sampleInput } from './payload.js';

export interface CeilingPoint {
  batch: number;
  runs: number;
  /** Rows per second. */
  itemsPerSec: number;
  /** Time of one `session.run` at this batch size. */
  runMs: LatencySummary;
}

export interface CeilingResult {
  intraOpThreads: number;
  interOpThreads: number;
  byBatch: CeilingPoint[];
  best: CeilingPoint;
  batch1: CeilingPoint | null;
}

export interface CeilingOptions {
  batches: readonly number[];
  /** Measured seconds per batch size (after 3 warm-up runs). */
  secondsPerBatch: number;
  /** Upper bound on runs per batch size, whatever the time. */
  maxRuns?: number;
}

/** @throws when the model cannot be loaded. */
export async function measureCeiling(model: string, o: CeilingOptions): Promise<CeilingResult> {
  // Imported here so that processes which never measure a ceiling never load onnxruntime.
  const ort = await import('onnxruntime-node');
  const { resolveModels, irisModelPath } = await import('../src/models/registry.js');
  const [spec] = resolveModels([model]);
  if (spec === undefined) throw new Error(`no spec for ${model}`);
  if (model === 'iris' && !existsSync(irisModelPath)) {
    // As the CLI does on first start; done here first so the node and the plain server never race to write it.
    const { buildIrisModel } = await import('../src/models/builders/iris.js');
    buildIrisModel(irisModelPath);
  }
  const session = await ort.InferenceSession.create(spec.path, {
    intraOpNumThreads: spec.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  });
  const input = spec.inputs[0]!;
  const rowShape = input.shape.slice(1);
  const maxRuns = o.maxRuns ?? 1_000_000;
  const byBatch: CeilingPoint[] = [];
  try {
    for (const batch of o.batches) {
      const data = sampleInput(model, rowShape, batch);
      const feeds = { [input.name]: new ort.Tensor('float32', data, [batch, ...rowShape]) };
      for (let i = 0; i < 3; i++) await session.run(feeds);
      const hist = newHistogram();
      const start = performance.now();
      const until = start + o.secondsPerBatch * 1000;
      let runs = 0;
      let t = start;
      while (runs < maxRuns && t < until) {
        await session.run(feeds);
        const t1 = performance.now();
        recordMs(hist, t1 - t);
        t = t1;
        runs++;
      }
      byBatch.push({ batch, runs, itemsPerSec: (runs * batch) / ((t - start) / 1000), runMs: summarize(hist) });
    }
  } finally {
    await session.release();
  }
  let best = byBatch[0]!;
  for (const p of byBatch) if (p.itemsPerSec > best.itemsPerSec) best = p;
  return { intraOpThreads: spec.intraOpThreads, interOpThreads: 1, byBatch, best, batch1: byBatch.find((p) => p.batch === 1) ?? null };
}
