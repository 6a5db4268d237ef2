/**
 * The node's one port: HTTP, WebSocket upgrades for clients (`/v1/stream`)
 * and for peers (`/cluster`). Upgrades are handled here (`noServer`), so a
 * request for an unknown path is refused before a socket is allocated.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode } from '../errors.js';

export interface ServerOptions {
  host: string;
  port: number;
  maxFrameBytes: number;
  onClient: (ws: WebSocket, req: IncomingMessage) => void;
  /** Peer links; absent on a node that takes no peers. */
  onPeer?: (ws: WebSocket, req: IncomingMessage) => void;
  /** Largest peer frame (tensors batch up between nodes). */
  maxPeerFrameBytes?: number;
  /** Answers GET /v2/health/ready. */
  isReady: () => boolean;
  /** Refuses new client connections (while leaving). */
  acceptClients?: () => boolean;
  /** Decides a client upgrade before a socket exists: 401 when it returns false. */
  authorizeClient?: (req: IncomingMessage) => boolean;
  /** PEM certificate and key: serve https and wss instead of http and ws. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** Further WebSocket endpoints by path (the dashboard feed). */
  upgrades?: Record<string, (ws: WebSocket, req: IncomingMessage) => void>;
  /** Further HTTP routes; returns false when it does not handle the request. */
  routes?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean;
}

export interface RunningServer {
  readonly port: number;
  readonly http: HttpServer;
  close(): Promise<void>;
}

export const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
};

/** @throws when the port cannot be bound. */
export async function startServer(o: ServerOptions): Promise<RunningServer> {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: o.maxFrameBytes,
    perMessageDeflate: false,
    clientTracking: true,
  });
  const peers = new WebSocketServer({
    noServer: true,
    maxPayload: o.maxPeerFrameBytes ?? 64 * 1024 * 1024,
    perMessageDeflate: false,
    clientTracking: true,
  });
  const side = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, perMessageDeflate: false, clientTracking: true });
  const handler: RequestListener = (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/v2/health/live') return json(res, 200, { live: true });
    if (req.method === 'GET' && path === '/v2/health/ready') {
      const ready = o.isReady();
      return json(res, ready ? 200 : 503, { ready });
    }
    if (o.routes?.(req, res, path ?? '/')) return;
    json(res, 404, { error: `no route for ${req.method} ${path}` });
  };
  const http: HttpServer = o.tls ? (createTlsServer({ cert: o.tls.cert, key: o.tls.key }, handler) as unknown as HttpServer) : createServer(handler);
  http.headersTimeout = 10_000;
  http.requestTimeout = 30_000;
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/cluster' && o.onPeer) {
      const onPeer = o.onPeer;
      return peers.handleUpgrade(req, socket, head, (ws) => onPeer(ws, req));
    }
    const extra = path !== undefined && o.upgrades && Object.hasOwn(o.upgrades, path) ? o.upgrades[path] : undefined;
    if (extra) return side.handleUpgrade(req, socket, head, (ws) => extra(ws, req));
    if (path !== '/v1/stream') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    if (o.acceptClients && !o.acceptClients()) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    if (o.authorizeClient && !o.authorizeClient(req)) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => o.onClient(ws, req));
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(o.port, o.host, () => {
      http.off('error', reject);
      resolve();
    });
  });
  const address = http.address();
  const port = typeof address === 'object' && address ? address.port : o.port;
  return {
    port,
    http,
    close: async () => {
      for (const ws of wss.clients) ws.close(CloseCode.goingAway, 'node is shutting down');
      for (const ws of peers.clients) ws.terminate();
      for (const ws of side.clients) ws.terminate();
      await new Promise<void>((resolve) => side.close(() => resolve()));
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => peers.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
