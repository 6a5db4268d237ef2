/**
 * Entry of the worker_thread that owns one ONNX Runtime session.
 * `session.run` blocks its thread for the whole run, so it lives here and the
 * node's event loop stays free for sockets and heartbeats.
 */
import { parentPort } from 'node:worker_threads';
import type * as ort from 'onnxruntime-node';
import { createSession, poisoned, runSession, takeNext, turn } from './onnxSession.js';
import { setThreadNice } from './threadPriority.js';
import type { FromThread, ThreadFaults, ToThread } from './threadProtocol.js';

if (!parentPort) throw new Error('inferenceThreadMain must run in a worker_thread');
const port = parentPort;

let session: ort.InferenceSession | undefined;
let faults: ThreadFaults = {};
let nextFault: 'throwNext' | 'hangNext' | undefined;

const post = (msg: FromThread, transfer: ArrayBuffer[] = []) => port.postMessage(msg, transfer);

port.on('message', async (msg: ToThread) => {
  switch (msg.t) {
    case 'load':
      try {
        // Before ONNX Runtime creates its intra-op threads, which inherit it: when inference
        // saturates the cores, the event loop (sockets, admission, heartbeats) still runs at
        // once instead of waiting for a time slice; inference takes every cycle it leaves.
        setThreadNice(msg.nice);
        faults = msg.faults ?? {};
        session = await createSession(msg.path, msg.intraOpThreads);
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
    msg = stopping ? undefined : takeNext(runs);
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
    if (poisoned(faults, msg.inputs)) throw new Error('poisoned input (fault injection)');
    const fault = nextFault;
    nextFault = undefined;
    if (fault === 'throwNext') throw new Error('injected worker crash (chaos)');
    // A hung native run: block this thread until the watchdog terminates it.
    if (fault === 'hangNext') Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    const { outputs, transfer, spent, inferMs } = await runSession(session, msg.inputs);
    return { msg: { t: 'done', batchId: msg.batchId, outputs, inferMs, spent }, transfer: [...transfer, ...spent] };
  } catch (e) {
    post({ t: 'failed', batchId: msg.batchId, message: (e as Error).message });
    return undefined;
  }
}
