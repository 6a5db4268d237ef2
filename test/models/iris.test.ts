import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import onnxProto from 'onnx-proto';
import { IRIS_LABELS, irisDataset, irisForward, irisToOnnx, trainIris } from '../../src/models/builders/iris.js';

const { onnx } = onnxProto;

describe('iris builder', () => {
  const model = trainIris({ seed: 7 });
  const bytes = irisToOnnx(model);
  const { x, y } = irisDataset();
  let session: ort.InferenceSession;
  let probs: Float32Array;

  beforeAll(async () => {
    session = await ort.InferenceSession.create(bytes);
    const input = new ort.Tensor('float32', Float32Array.from(x.flat()), [x.length, 4]);
    const out = await session.run({ input });
    probs = out['probabilities']!.data as Float32Array;
  });

  afterAll(async () => {
    await session?.release();
  });

  it('produces identical weights and accuracies for the same seed', () => {
    const again = trainIris({ seed: 7 });
    expect(again).toEqual(model);
    expect(irisToOnnx(again)).toEqual(bytes);
    expect(model.testAccuracy).toBeGreaterThanOrEqual(0.95);
  });

  it('writes an ONNX model that onnxruntime loads with an input tensor and a probabilities output', () => {
    expect(session.inputNames).toEqual(['input']);
    expect(session.outputNames).toEqual(['probabilities']);
  });

  it('embeds the label names and test accuracy as model metadata', () => {
    const decoded = onnx.ModelProto.decode(bytes);
    const meta = Object.fromEntries(decoded.metadataProps.map((e) => [e.key, e.value]));
    expect(JSON.parse(meta['labels']!)).toEqual([...IRIS_LABELS]);
    expect(Number(meta['accuracy'])).toBeCloseTo(model.testAccuracy, 4);
    expect(decoded.producerName).toBe('actorserve');
  });

  it('returns a probability distribution per row that classifies the full dataset at least 90% correctly', () => {
    expect(probs.length).toBe(x.length * 3);
    let correct = 0;
    for (let i = 0; i < x.length; i++) {
      const row = Array.from(probs.subarray(i * 3, i * 3 + 3));
      expect(Math.abs(row.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
      if (row.indexOf(Math.max(...row)) === y[i]) correct++;
    }
    expect(correct / x.length).toBeGreaterThanOrEqual(0.9);
  });

  it('matches the TypeScript forward pass within 1e-5', () => {
    const expected = irisForward(model, x).flat();
    const maxDiff = Math.max(...expected.map((e, i) => Math.abs(e - probs[i]!)));
    expect(maxDiff).toBeLessThan(1e-5);
  });
});
