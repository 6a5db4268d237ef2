import { describe, expect, it } from 'vitest';
import { DEFAULT_INFERENCE_NICE, defaultIntraOpThreads, resolveModels } from '../../src/models/registry.js';

describe('model registry defaults and overrides', () => {
  it('gives splittable models every core but one for intra-op threads, at least 1 and at most 4', () => {
    expect([1, 2, 3, 4, 5, 8, 64].map((c) => defaultIntraOpThreads(c))).toEqual([1, 1, 2, 3, 4, 4, 4]);
    const [iris, text] = resolveModels(['iris', 'text-orientation']);
    expect(iris!.intraOpThreads).toBe(1);
    expect(text!.intraOpThreads).toBe(defaultIntraOpThreads());
    expect(text!.inferenceNice).toBe(DEFAULT_INFERENCE_NICE);
  });

  it('applies overrides and refuses values out of range', () => {
    const [t] = resolveModels(['text-orientation'], { intraOpThreads: 3, inferenceNice: 0, maxQueueDelayMs: 0 });
    expect(t).toMatchObject({ intraOpThreads: 3, inferenceNice: 0 });
    expect(t!.batching.maxQueueDelayMs).toBeUndefined();
    expect(resolveModels(['iris'], { maxQueueDelayMs: 40 })[0]!.batching.maxQueueDelayMs).toBe(40);
    expect(() => resolveModels(['iris'], { inferenceNice: 20 })).toThrow(RangeError);
    expect(() => resolveModels(['iris'], { inferenceNice: -1 })).toThrow(RangeError);
    expect(() => resolveModels(['iris'], { maxQueueDelayMs: 1.5 })).toThrow(RangeError);
    expect(() => resolveModels(['nope'])).toThrow(/unknown model "nope"/);
    // preferredBatch stays within maxBatch: lowered with it, refused above it.
    expect(resolveModels(['text-orientation'], { maxBatch: 2 })[0]!.batching).toMatchObject({ maxBatch: 2, preferredBatch: 2 });
    expect(resolveModels(['text-orientation'], { preferredBatch: 12 })[0]!.batching.preferredBatch).toBe(12);
    expect(() => resolveModels(['text-orientation'], { preferredBatch: 17 })).toThrow(RangeError);
  });
});
