import type { IncomingMessage, ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { NodeContext } from './context.js';

/** The dashboard page and its assets; returns false for other paths. */
export function handleDashboard(_req: IncomingMessage, _res: ServerResponse, _path: string, _ctx: NodeContext): boolean {
  return false;
}

/** A browser's live feed (`/v1/dashboard/ws`). */
export function dashboardFeed(ws: WebSocket, _ctx: NodeContext): void {
  ws.close(1000);
}
