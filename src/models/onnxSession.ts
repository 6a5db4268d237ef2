/**
 * One ONNX Runtime session and one run of it, shared by the two places a
 * model runs: a worker_thread (inferenceThreadMain) and the node's own
 * thread (InlineSession).
 */
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import type { ThreadFaults, ThreadTensor } from './threadProtocol.js';

export function createSession(path: string, intraOpThreads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, {
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    // Spinning intra-op threads would burn the cores the event loop and other workers need.
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  });
}

const typedArray = (t: ThreadTensor) => {
  switch (t.dtype) {
    case 'float32': return new Float32Array(t.buffer);
    case 'float64': return new Float64Array(t.buffer);
    case 'int32': return new Int32Array(t.buffer);
    case 'int64': return new BigInt64Array(t.buffer);
    case 'uint8': return new Uint8Array(t.buffer);
    case 'int8': return new Int8Array(t.buffer);
  }
};

const ownBuffer = (data: ArrayBufferView): ArrayBuffer => {
  const b = data.buffer as ArrayBuffer;
  return data.byteOffset === 0 && data.byteLength === b.byteLength
    ? b
    : b.slice(data.byteOffset, data.byteOffset + data.byteLength);
};

/** Fault injection: does any float32 input hold the poison value? */
export function poisoned(faults: ThreadFaults, inputs: Record<string, ThreadTensor>): boolean {
  if (faults.poisonValue === undefined) return false;
  for (const t of Object.values(inputs)) {
    if (t.dtype === 'float32' && new Float32Array(t.buffer).includes(faults.poisonValue)) return true;
  }
  return false;
}

export interface SessionRun {
  outputs: Record<string, ThreadTensor>;
  /** The outputs' buffers, each whole, for a transfer list. */
  transfer: ArrayBuffer[];
  /** The inputs' buffers, done with (none of them an output's), for their owner to use again. */
  spent: ArrayBuffer[];
  inferMs: number;
}

/** Runs the session on a batch; every output in a buffer of its own. */
export async function runSession(session: ort.InferenceSession, inputs: Record<string, ThreadTensor>): Promise<SessionRun> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const [name, t] of Object.entries(inputs)) feeds[name] = new ort.Tensor(t.dtype, typedArray(t), t.shape);
  const started = performance.now();
  const results = await session.run(feeds);
  const inferMs = performance.now() - started;
  const outputs: Record<string, ThreadTensor> = {};
  const transfer: ArrayBuffer[] = [];
  for (const [name, tensor] of Object.entries(results)) {
    const buffer = ownBuffer(tensor.data as ArrayBufferView);
    outputs[name] = { dtype: tensor.type as ThreadTensor['dtype'], shape: [...tensor.dims], buffer };
    transfer.push(buffer);
  }
  const spent = [...new Set(Object.values(inputs).map((t) => t.buffer))].filter((b) => !transfer.includes(b));
  return { outputs, transfer, spent, inferMs };
}

/** One turn of the event loop: runs handed over meanwhile (and a `stop`) are seen before the next is picked. */
export const turn = (): Promise<unknown> => new Promise((resolve) => setImmediate(resolve));

/** After a run: the first urgent run waiting, else the first waiting (removed from `runs`). */
export function takeNext<R extends { urgent?: boolean }>(runs: R[]): R | undefined {
  const i = runs.findIndex((r) => r.urgent);
  return i < 0 ? runs.shift() : runs.splice(i, 1)[0];
}
