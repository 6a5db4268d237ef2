import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NodeContext } from './context.js';

/** Open Inference Protocol (KServe v2) REST routes; returns false for other paths. */
export function handleOip(_req: IncomingMessage, _res: ServerResponse, _path: string, _ctx: NodeContext): boolean {
  return false;
}
