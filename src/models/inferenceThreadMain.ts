/**
 * Entry of the worker_thread that owns one ONNX Runtime session.
 * `session.run` blocks its thread for the whole run, so it lives here and the
 * node's event loop stays free for sockets and heartbeats.
 */
import { parentPort } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import * as ort from 'onnxruntime-node';
import type { FromThread, ThreadFaults, ThreadTensor, ToThread } from './threadProtocol.js';

if (!parentPort) throw new Error('inferenceThreadMain must run in a worker_thread');
const port = parentPort;

let session: ort.InferenceSession | undefined;
let faults: ThreadFaults = {};
let nextFault: 'throwNext' | 'hangNext' | undefined;

const post = (msg: FromThread, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

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

const poisoned = (inputs: Record<string, ThreadTensor>) => {
  if (faults.poisonValue === undefined) return false;
  for (const t of Object.values(inputs)) {
    if (t.dtype === 'float32' && new Float32Array(t.buffer).includes(faults.poisonValue)) return true;
  }
  return false;
};

/**
 * Linux: lowers this thread's scheduling priority (nice), before ONNX Runtime
 * creates its intra-op threads, which inherit it. When inference saturates
 * the cores, the event loop (sockets, admission, heartbeats) still runs at
 * once instead of waiting for a time slice; inference takes every cycle it
 * leaves. Elsewhere nice is per process, so nothing is changed.
 */
function lowerThreadPriority(nice: number): void {
  if (process.platform !== 'linux' || nice === 0) return;
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, nice);
  } catch {
    // No /proc or not permitted: run at the process's priority.
  }
}

port.on('message', async (msg: ToThread) => {
  switch (msg.t) {
    case 'load':
      try {
        lowerThreadPriority(msg.nice);
        faults = msg.faults ?? {};
        session = await ort.InferenceSession.create(msg.path, {
          intraOpNumThreads: msg.intraOpThreads,
          interOpNumThreads: 1,
          executionMode: 'sequential',
          graphOptimizationLevel: 'all',
          // Spinning intra-op threads would burn the cores the event loop and other workers need.
          extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
        });
        post({ t: 'ready', inputNames: [...session.inputNames], outputNames: [...session.outputNames] });
      } catch (e) {
        post({ t: 'loadFailed', message: (e as Error).message });
      }
      return;
    case 'stop':
      stopping = true;
      if (!pumping) process.exit(0);
      return;
    case 'fault':
      if (msg.fault === 'exit') process.exit(70);
      nextFault = msg.fault;
      return;
    case 'run':
      runs.push(msg);
      void pump();
      return;
  }
});

type RunMsg = Extract<ToThread, { t: 'run' }>;
type Done = Extract<FromThread, { t: 'done' }>;
/** Runs handed over and not yet started, in the order they came. */
const runs: RunMsg[] = [];
let pumping = false;
/** Told to stop: no run starts any more, and the thread exits once the current one ends. */
let stopping = false;

/** One turn of this thread's loop, so a `stop` or a run that came meanwhile is seen. */
const turn = () => new Promise((resolve) => setImmediate(resolve));

/** After a run: the first urgent run waiting, else the first waiting. */
function takeNext(): RunMsg | undefined {
  const i = runs.findIndex((r) => r.urgent);
  return i < 0 ? runs.shift() : runs.splice(i, 1)[0];
}

async function pump(): Promise<void> {
  if (pumping) return;
  pumping = true;
  await turn();
  // From idle the first run to arrive starts, whatever came behind it: the owner, told no `next`,
  // counts on the order it sent them.
  let msg = stopping ? undefined : runs.shift();
  while (msg) {
    const done = await runOne(msg);
    if (!done) {
      stopping = true;
      break;
    }
    // The next run is picked before the result goes out, and named in it.
    await turn();
    msg = stopping ? undefined : takeNext();
    post(msg ? { ...done.msg, next: msg.batchId } : done.msg, done.transfer);
  }
  pumping = false;
  // process.exit in a worker_thread ends this thread only.
  if (stopping) process.exit(0);
}

/**
 * Runs one batch; returns its result, to post. Returns undefined when it
 * failed (posted here): the worker actor crashes and restarts this thread,
 * so nothing more runs here.
 */
async function runOne(msg: RunMsg): Promise<{ msg: Done; transfer: ArrayBuffer[] } | undefined> {
  try {
    if (!session) throw new Error('run before load');
    if (poisoned(msg.inputs)) throw new Error('poisoned input (fault injection)');
    const fault = nextFault;
    nextFault = undefined;
    if (fault === 'throwNext') throw new Error('injected worker crash (chaos)');
    // A hung native run: block this thread until the watchdog terminates it.
    if (fault === 'hangNext') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(msg.inputs)) feeds[name] = new ort.Tensor(t.dtype, typedArray(t), t.shape);
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
    return { msg: { t: 'done', batchId: msg.batchId, outputs, inferMs }, transfer };
  } catch (e) {
    post({ t: 'failed', batchId: msg.batchId, message: (e as Error).message });
    return undefined;
  }
}
