/**
 * Fault injection on a running node, for the chaos suite and tests. Off
 * unless the node is started with `chaos: true` (CLI `--chaos`); over HTTP
 * it also needs the admin token.
 */
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';

export const ChaosRequest = Type.Union([
  Type.Object({ fault: Type.Literal('crashWorker'), model: Type.String({ maxLength: 128 }), worker: Type.Optional(Type.Integer({ minimum: 0 })) }),
  Type.Object({ fault: Type.Literal('hangWorker'), model: Type.String({ maxLength: 128 }), worker: Type.Optional(Type.Integer({ minimum: 0 })) }),
  Type.Object({ fault: Type.Literal('exitWorker'), model: Type.String({ maxLength: 128 }), worker: Type.Optional(Type.Integer({ minimum: 0 })) }),
  Type.Object({ fault: Type.Literal('killNode') }),
  Type.Object({ fault: Type.Literal('dropPeerMessages'), fraction: Type.Number({ minimum: 0, maximum: 1 }) }),
  Type.Object({ fault: Type.Literal('delayPeerMessages'), ms: Type.Number({ minimum: 0, maximum: 60_000 }) }),
  Type.Object({ fault: Type.Literal('cutLink'), peer: Type.String({ maxLength: 64 }) }),
  Type.Object({ fault: Type.Literal('heal'), peer: Type.Optional(Type.String({ maxLength: 64 })) }),
]);
export type ChaosRequest = Static<typeof ChaosRequest>;
export const checkChaos = TypeCompiler.Compile(ChaosRequest);

export interface ChaosTarget {
  /** The worker's next run throws / hangs past the watchdog; or its thread exits now. */
  workerFault(model: string, worker: number, fault: 'throwNext' | 'hangNext' | 'exit'): boolean;
  peerFaults: { dropFraction: number; delayMs: number };
  cutLink(peer: string): boolean;
  heal(peer?: string): void;
  kill(): void;
}

/** Applies one fault; returns a short description, or throws RangeError for an unknown target. */
export function applyChaos(target: ChaosTarget, r: ChaosRequest): string {
  switch (r.fault) {
    case 'crashWorker':
    case 'hangWorker':
    case 'exitWorker': {
      const fault = r.fault === 'crashWorker' ? 'throwNext' : r.fault === 'hangWorker' ? 'hangNext' : 'exit';
      if (!target.workerFault(r.model, r.worker ?? 0, fault)) throw new RangeError(`no running worker ${r.worker ?? 0} of model ${r.model}`);
      return `${r.fault} ${r.model}/worker-${r.worker ?? 0}`;
    }
    case 'killNode':
      setImmediate(() => target.kill());
      return 'killing the node';
    case 'dropPeerMessages':
      target.peerFaults.dropFraction = r.fraction;
      return `dropping ${r.fraction} of peer messages`;
    case 'delayPeerMessages':
      target.peerFaults.delayMs = r.ms;
      return `delaying peer messages by ${r.ms} ms`;
    case 'cutLink':
      if (!target.cutLink(r.peer)) throw new RangeError(`no link to ${r.peer}`);
      return `cut the link to ${r.peer}`;
    case 'heal':
      target.heal(r.peer);
      target.peerFaults.dropFraction = 0;
      target.peerFaults.delayMs = 0;
      return r.peer ? `healed the link to ${r.peer}` : 'healed every fault';
  }
}
