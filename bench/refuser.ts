/**
 * The floor under "time to an `overloaded` answer": the least a WebSocket
 * server can do with a request, on the same machine, fed by the same load
 * generator. It speaks just enough of the client protocol (a welcome, then
 * one `overloaded` error per `infer` frame, decoded with the node's own
 * codec) and runs no model, no actors, no admission. What the generator
 * measures against it is the cost of the generator, the loopback and
 * WebSocket framing on these cores; the node's figure minus this one is the
 * node's own. Started by the bench as its own process:
 *
 *   node dist/bench/refuser.js --port P
 *
 * Routes: `GET /ready`, and `ws://…/v1/stream`.
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { isMainThread, Worker, workerData } from 'node:worker_threads';
import { WebSocketServer, type RawData } from 'ws';
import { applyHeapGrowth, DEFAULT_HEAP_GROWTH_PERCENT } from '../src/heapGrowth.js';
import { applyParallelScavenge } from '../src/scavenge.js';
import { setThreadNice } from '../src/models/threadPriority.js';
import { decodeUntrusted, encode } from '../src/transport/codec.js';

const MAX_FRAME_BYTES = 8 * 1024 * 1024;
const RETRY_AFTER_MS = 100;

/** The busy thread: lowers its own priority, then computes until the process exits. */
function spin(nice: number): void {
  setThreadNice(nice);
  let x = 1;
  for (;;) x = Math.imul(x, 1_103_515_245) + 12_345;
}

function main(): void {
  const { values } = parseArgs({
    options: { port: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, 'busy-nice': { type: 'string' } },
  });
  const port = Number(values.port ?? 0);
  if (values['busy-nice'] !== undefined) {
    const nice = Number(values['busy-nice']);
    if (!Number.isInteger(nice) || nice < -20 || nice > 19) throw new RangeError(`--busy-nice must be an integer from -20 to 19, not ${values['busy-nice']}`);
    new Worker(new URL(import.meta.url), { workerData: { nice } }).unref();
  }
  // The same collector settings as a node: the floor must not pay for garbage collection the node avoids.
  applyHeapGrowth(DEFAULT_HEAP_GROWTH_PERCENT);
  applyParallelScavenge('auto');
  const server = createServer((req, res) => {
    const ok = req.method === 'GET' && req.url === '/ready';
    res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json' });
    res.end(ok ? '{"ready":true}' : '{"error":"not found"}');
  });
  const wss = new WebSocketServer({ server, path: '/v1/stream', perMessageDeflate: false, maxPayload: MAX_FRAME_BYTES });
  wss.on('connection', (ws) => {
    ws.send(encode({ t: 'welcome', node: 'refuser', models: [], limits: { maxInFlight: 1 << 30, maxFrameBytes: MAX_FRAME_BYTES } }));
    ws.on('message', (raw: RawData) => {
      let id: unknown;
      try {
        id = (decodeUntrusted(raw as Buffer) as { id?: unknown }).id;
      } catch {
        return void ws.close(1007, 'not msgpack');
      }
      ws.send(encode({ t: 'error', id, code: 'overloaded', message: 'refused at once (the bench floor)', retryAfterMs: RETRY_AFTER_MS }));
    });
  });
  server.listen(port, values.host, () => {
    const addr = server.address();
    process.stdout.write(`${JSON.stringify({ msg: 'listening', port: typeof addr === 'object' && addr ? addr.port : port })}\n`);
  });
  const shutdown = () => {
    for (const c of wss.clients) c.terminate();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

if (isMainThread) main();
else spin((workerData as { nice: number }).nice);
