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
  | { t: 'run'; batchId: number; inputs: Record<string, ThreadTensor> };

export type FromThread =
  | { t: 'ready'; inputNames: string[]; outputNames: string[] }
  | { t: 'loadFailed'; message: string }
  | { t: 'done'; batchId: number; outputs: Record<string, ThreadTensor>; inferMs: number }
  | { t: 'failed'; batchId: number; message: string };
