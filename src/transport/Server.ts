/**
 * The node's one port: HTTP (health; more endpoints later) and WebSocket
 * upgrades for `/v1/stream`. Upgrades are handled here (`noServer`), so a
 * request for an unknown path is refused before a socket is allocated.
 */
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode } from '../errors.js';

export interface ServerOptions {
  host: string;
  port: number;
  maxFrameBytes: number;
  onClient: (ws: WebSocket, req: IncomingMessage) => void;
  /** Answers GET /v2/health/ready. */
  isReady: () => boolean;
}

export interface RunningServer {
  readonly port: number;
  readonly http: HttpServer;
  close(): Promise<void>;
}

const json = (res: ServerResponse, status: number, body: unknown) => {
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
  const http = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/v2/health/live') return json(res, 200, { live: true });
    if (req.method === 'GET' && path === '/v2/health/ready') {
      const ready = o.isReady();
      return json(res, ready ? 200 : 503, { ready });
    }
    json(res, 404, { error: `no route for ${req.method} ${path}` });
  });
  http.headersTimeout = 10_000;
  http.requestTimeout = 30_000;
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/v1/stream') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
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
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
