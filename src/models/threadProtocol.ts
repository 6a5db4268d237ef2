/** Messages between an InferenceThread handle and its worker_thread. */
import type { DType } from '../transport/protocol.js';

export interface ThreadTensor {
  dtype: DType;
  shape: number[];
  /** Whole buffer, moved with a transfer list. */
  buffer: ArrayBuffer;
}

export interface ThreadFaults {
  /** Throw from run when any element of a float32 input equals this (fault injection). */
  poisonValue?: number;
}

/** Injected faults (chaos): the next run throws or hangs, or the thread exits now. */
export type ThreadFault = 'throwNext' | 'hangNext' | 'exit';

export type ToThread =
  | { t: 'load'; path: string; intraOpThreads: number; nice: number; faults?: ThreadFaults }
  | { t: 'fault'; fault: ThreadFault }
  /** Exit once the run in progress (if any) ends; runs not yet started are dropped. */
  | { t: 'stop' }
  /** `urgent`: run it before the non-urgent runs staged here (high priority must not wait behind them). */
  | { t: 'run'; batchId: number; inputs: Record<string, ThreadTensor>; urgent?: boolean };

export type FromThread =
  | { t: 'ready'; inputNames: string[]; outputNames: string[] }
  | { t: 'loadFailed'; message: string }
  /**
   * `next`: the run this thread starts now, picked before this was posted
   * (absent when none was waiting: the next run is then the first to arrive).
   * It lets the owner know which run is in progress without a message per run.
   * `spent`: the run's input buffers, moved back for the owner to use again.
   */
  | { t: 'done'; batchId: number; outputs: Record<string, ThreadTensor>; inferMs: number; next?: number; spent?: ArrayBuffer[] }
  | { t: 'failed'; batchId: number; message: string };
