/**
 * The node's one port: HTTP, WebSocket upgrades for clients (`/v1/stream`)
 * and for peers (`/cluster`). Upgrades are handled here (`noServer`), so a
 * request for an unknown path is refused before a socket is allocated.
 */
import { createServer, type IncomingMessage, type RequestListener, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { CloseCode } from '../errors.js';
import type { RefusedConnection } from '../metrics/Metrics.js';
import { plainAddress } from './clientAddress.js';
import type { TlsMaterial } from './Tls.js';

/** Sockets of any kind (peers, probes, HTTP callers, upgrades in progress) the port holds beyond its client cap. */
export const SOCKET_HEADROOM = 1024;
/** `Retry-After` of an upgrade refused because the node holds its most client connections. */
export const FULL_RETRY_AFTER_S = 1;

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
  /**
   * Client WebSocket connections the node holds at most; an upgrade past it
   * is answered 503 with `Retry-After` before a socket is allocated, and
   * the port closes sockets of any kind past this + {@link SOCKET_HEADROOM}
   * at accept. Default: no cap.
   */
  maxClients?: number;
  /**
   * Client WebSocket connections one remote address ({@link addressKey}: an IPv6 one by its /64)
   * may hold at most; an upgrade past it is answered 503 with `Retry-After`, so one host cannot
   * take every slot of {@link maxClients}. Default: no cap (clients behind one proxy or NAT share an address).
   */
  maxClientsPerAddress?: number;
  /**
   * TCP connections of any kind (HTTP, WebSocket clients, the dashboard's feeds) one remote address
   * may hold at most; one past it is dropped at accept, as Node drops those past the port's own cap,
   * so one host cannot fill the port with idle or trickling sockets. Default: no cap.
   */
  maxSocketsPerAddress?: number;
  /** The address a client upgrade is counted by for {@link maxClientsPerAddress}. Default: its socket's. */
  clientAddress?: (req: IncomingMessage) => string;
  /** Told of every client upgrade refused (and, with a socket cap, every socket dropped), with why. */
  onRefused?: (reason: RefusedConnection) => void;
  /** Decides a client upgrade before a socket exists: 401 when it returns false. */
  authorizeClient?: (req: IncomingMessage) => boolean;
  /** PEM certificate and key: serve https and wss instead of http and ws. */
  tls?: TlsMaterial;
  /**
   * A socket that has not sent a whole request head (an HTTP request or a WebSocket upgrade) this
   * long after it connected, or after its last request, is answered 408 and closed. Default 10 000.
   */
  headersTimeoutMs?: number;
  /** Further WebSocket endpoints by path (the dashboard feed). */
  upgrades?: Record<string, (ws: WebSocket, req: IncomingMessage) => void>;
  /** Further HTTP routes; returns false when it does not handle the request. */
  routes?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean;
}

/** The answer to an upgrade past a connection cap: 503, `Retry-After`, and the reason as JSON. */
const fullResponse = (message: string) => {
  const body = JSON.stringify({ error: 'overloaded', message, retryAfterMs: FULL_RETRY_AFTER_S * 1000 });
  return (
    `HTTP/1.1 503 Service Unavailable\r\nretry-after: ${FULL_RETRY_AFTER_S}\r\ncontent-type: application/json\r\n` +
    `connection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
};
const FULL_RESPONSE = fullResponse('this node holds its most client connections; retry later or connect to another node');
const ADDRESS_FULL_RESPONSE = fullResponse('this address holds its most client connections on this node; close one, retry later or connect to another node');

/**
 * What the per-address cap counts a client by: its IPv4 address (an IPv4-mapped IPv6 one too), or
 * the /64 prefix of its IPv6 address, since one IPv6 host is given a whole /64 and could take a
 * fresh address for every connection.
 */
export function addressKey(address: string): string {
  const bare = plainAddress(address);
  if (!bare.includes(':')) return bare;
  const [head = '', tail] = bare.split('::');
  const front = head ? head.split(':') : [];
  const back = tail ? tail.split(':') : [];
  // A dotted IPv4 tail (64:ff9b::1.2.3.4) takes two groups.
  const backGroups = back.length + (back.at(-1)?.includes('.') ? 1 : 0);
  const groups = tail === undefined ? front : [...front, ...Array<string>(Math.max(0, 8 - front.length - backGroups)).fill('0'), ...back];
  return `${groups.slice(0, 4).map((g) => (Number.parseInt(g, 16) || 0).toString(16)).join(':')}::/64`;
}

/** How many of something each remote address holds; an address holding none has no entry. */
class PerAddress {
  private readonly counts = new Map<string, number>();

  holds(key: string): number {
    return this.counts.get(key) ?? 0;
  }

  /** Counts one more for `key` until `released` emits 'close'. */
  add(key: string, released: { once(event: 'close', listener: () => void): unknown }): void {
    this.counts.set(key, this.holds(key) + 1);
    released.once('close', () => {
      const left = this.holds(key) - 1;
      if (left === 0) this.counts.delete(key);
      else this.counts.set(key, left);
    });
  }
}

/** Drops a new TCP connection from an address that holds `max` already (an IPv6 one by its /64). */
function capSocketsPerAddress(server: HttpServer, max: number, dropped: () => void): void {
  const open = new PerAddress();
  // 'connection' is the raw TCP socket, before any TLS handshake or request byte: a dropped one costs nothing more.
  server.on('connection', (socket: Socket) => {
    const key = addressKey(socket.remoteAddress ?? '');
    if (open.holds(key) >= max) {
      dropped();
      socket.destroy();
      return;
    }
    open.add(key, socket);
  });
}

export interface RunningServer {
  readonly port: number;
  readonly http: HttpServer;
  /**
   * Serves this certificate and key to connections from now on; those already open keep theirs.
   * @throws RangeError on a server started without TLS; Error when the pair does not make a TLS context.
   */
  setCertificate(tls: TlsMaterial): void;
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
  /** Client connections open per remote address (only with a per-address cap). */
  const perAddress = new PerAddress();
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
  const headersTimeout = o.headersTimeoutMs ?? 10_000;
  // Node checks the timeouts every 30 s by default, so a socket that never sent a byte lived up to 40 s:
  // a slowloris needed a quarter of the connections to hold the port full. Checking every second (or a
  // quarter of a shorter timeout) closes such a socket within a second of its timeout.
  const checking = { connectionsCheckingInterval: Math.max(10, Math.min(1_000, Math.floor(headersTimeout / 4))) };
  const https = o.tls ? createTlsServer({ cert: o.tls.cert, key: o.tls.key, ...checking }, handler) : undefined;
  const http: HttpServer = https ? (https as unknown as HttpServer) : createServer(checking, handler);
  http.headersTimeout = headersTimeout;
  http.requestTimeout = 30_000;
  if (o.maxClients !== undefined) http.maxConnections = o.maxClients + SOCKET_HEADROOM;
  if (o.maxSocketsPerAddress !== undefined) capSocketsPerAddress(http, o.maxSocketsPerAddress, () => o.onRefused?.('max_sockets_per_address'));
  const refuse = (socket: Duplex, reason: RefusedConnection, response: string) => {
    o.onRefused?.(reason);
    socket.end(response);
  };
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
      return refuse(socket, 'leaving', 'HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    }
    if (o.maxClients !== undefined && wss.clients.size >= o.maxClients) {
      return refuse(socket, 'max_connections', FULL_RESPONSE);
    }
    const address = addressKey(o.clientAddress ? o.clientAddress(req) : (req.socket.remoteAddress ?? ''));
    if (o.maxClientsPerAddress !== undefined && perAddress.holds(address) >= o.maxClientsPerAddress) {
      return refuse(socket, 'max_connections_per_address', ADDRESS_FULL_RESPONSE);
    }
    if (o.authorizeClient && !o.authorizeClient(req)) {
      return refuse(socket, 'unauthorized', 'HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      if (o.maxClientsPerAddress !== undefined) perAddress.add(address, ws);
      o.onClient(ws, req);
    });
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
    setCertificate: (tls) => {
      if (!https) throw new RangeError('this server was started without TLS');
      https.setSecureContext({ cert: tls.cert, key: tls.key });
    },
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
