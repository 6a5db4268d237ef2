/**
 * One supervisor per model: a batcher and k workers under it. The workers'
 * crash policy (restart intensity, backoff) and the batcher's ledger
 * together make a worker crash lose nothing.
 */
import { spawnStateless, type Ref } from 'nact';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/Metrics.js';
import type { ModelSpec } from '../models/registry.js';
import type { ThreadFaults } from '../models/threadProtocol.js';
import { spawnBatcher } from './Batcher.js';
import type { MemoryBudget } from './BatcherLogic.js';
import type { BatcherActorMsg, InferRequest, WorkerMsg } from './messages.js';
import { Supervision, type SupervisionSettings } from './Supervision.js';
import type { TensorArena } from './tensorArena.js';
import { spawnWorker, type WorkerHandle } from './Worker.js';

export interface ModelSupervisorOptions {
  spec: ModelSpec;
  nodeId: string;
  supervision: SupervisionSettings;
  /** The model's supervisor gave up (restart intensity exceeded): the parent decides. */
  onEscalate?: () => void;
  runTimeoutMs: number;
  faults?: ThreadFaults;
  log: Logger;
  /** Told the model's queue and running requests after every batcher message. */
  onLoad?: (queued: number, running: number, readyWorkers: number) => void;
  metrics?: Metrics;
  budget?: MemoryBudget;
  arena?: TensorArena;
  handoff?: (req: InferRequest, canRunHere: boolean) => void;
  onGaveUp?: () => void;
}

export interface ModelHandle {
  spec: ModelSpec;
  batcher: Ref<BatcherActorMsg>;
  workers: WorkerHandle[];
  supervision: Supervision;
}

export function spawnModelSupervisor(parent: Ref<unknown>, o: ModelSupervisorOptions): ModelHandle {
  // nact paths allow no '@', so <model>@<version> is spelled <model>.v<version>.
  const sup = spawnStateless(parent as Ref<never>, () => undefined, `${o.spec.name}.v${o.spec.version}`);
  const names = Array.from({ length: o.spec.workers }, (_, i) => `worker-${i}`);
  const workerRefs = new Map<string, Ref<WorkerMsg>>();
  const batcher = spawnBatcher(sup, {
    spec: o.spec, nodeId: o.nodeId, workerNames: names, workers: workerRefs, log: o.log,
    ...(o.onLoad ? { onLoad: o.onLoad } : {}),
    ...(o.metrics ? { metrics: o.metrics } : {}),
    ...(o.budget ? { budget: o.budget } : {}),
    ...(o.arena ? { arena: o.arena } : {}),
    ...(o.handoff ? { handoff: o.handoff } : {}),
    ...(o.onGaveUp ? { onGaveUp: o.onGaveUp } : {}),
  });
  const supervision = new Supervision(names, o.supervision, (child) => {
    o.log.error({ model: o.spec.name, child }, 'model supervisor reached its restart intensity; escalating');
    o.onEscalate?.();
  });
  const workers = names.map((name) => {
    const { ref, handle } = spawnWorker(sup, {
      name,
      spec: o.spec,
      batcher,
      supervision,
      runTimeoutMs: o.runTimeoutMs,
      ...(o.faults ? { faults: o.faults } : {}),
      log: o.log,
      ...(o.metrics ? { onRestart: () => o.metrics!.workerRestarted(o.spec.name) } : {}),
    });
    workerRefs.set(name, ref);
    return handle;
  });
  return { spec: o.spec, batcher, workers, supervision };
}
