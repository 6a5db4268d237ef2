/**
 * The live dashboard on every node: `GET /dashboard` (a small page, its
 * script and uPlot's files from the installed package; see
 * `dashboard/assets.ts`) and the feed `/v1/dashboard/ws`, which pushes a
 * JSON `DashboardSnapshot` (`dashboard/snapshot.ts`) at once and then every
 * second. The feed is read-only: messages from the browser are ignored, and
 * one over 1 KiB closes it with 1009 (the upgrade's own cap is 64 KiB).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { WebSocket } from 'ws';
import type { NodeContext } from './context.js';
import { PAGE_PATH, dashboardAssets, sendAsset } from './dashboard/assets.js';
import { DashboardSampler } from './dashboard/Sampler.js';

export type { DashboardSnapshot, MemberSnapshot, ModelSnapshot } from './dashboard/snapshot.js';

/** One sampler per node, made with the node's first feed. */
const samplers = new WeakMap<NodeContext, DashboardSampler>();

/** The dashboard page and its assets (GET or HEAD); returns false for other paths. */
export function handleDashboard(req: IncomingMessage, res: ServerResponse, path: string, _ctx: NodeContext): boolean {
  if (path !== PAGE_PATH && !path.startsWith(`${PAGE_PATH}/`)) return false;
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-length': 0 });
    res.end();
    return true;
  }
  dashboardAssets().then(
    (assets) => {
      const a = assets.byPath.get(path);
      if (a) return sendAsset(req, res, a);
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8', 'content-length': 10 });
      res.end('not found\n');
    },
    (e: Error) => {
      const text = `dashboard unavailable: ${e.message}\n`;
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    },
  );
  return true;
}

/** A browser's live feed (`/v1/dashboard/ws`). */
export function dashboardFeed(ws: WebSocket, ctx: NodeContext): void {
  let sampler = samplers.get(ctx);
  if (!sampler) samplers.set(ctx, (sampler = new DashboardSampler(ctx)));
  sampler.attach(ws);
}

/** The node's sampler, if a feed ever connected (tests check it stops with the last feed). */
export function dashboardSampler(ctx: NodeContext): DashboardSampler | undefined {
  return samplers.get(ctx);
}
