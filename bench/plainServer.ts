/**
 * The baseline a team would write first: `node:http`, a JSON body
 * `{"inputs": [...]}` (nested arrays of shape [1, ...row]), one
 * `session.run` per request on the main thread, no batching, no worker
 * threads. Same model files and onnxruntime settings as an actorserve node
 * (from `resolveModels`). Started by the bench as its own process:
 *
 *   node dist/bench/plainServer.js --port P --models iris,text-orientation
 *
 * Routes: `POST /infer/<model>` → `{"outputs": [[...]]}`, `GET /ready`, and
 * `GET /metrics` with `nodejs_eventloop_lag_max_seconds` (the max since the
 * last scrape, as prom-client reports it), so the bench samples this server's
 * event loop exactly as it samples the node's.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { existsSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { irisModelPath, resolveModels, type ModelSpec } from '../src/models/registry.js';

/** Largest request body accepted, bytes (a text-orientation image as JSON is ~0.6 MB). */
const MAX_BODY_BYTES = 8 * 1024 * 1024;

interface Loaded {
  spec: ModelSpec;
  session: ort.InferenceSession;
  rowShape: number[];
  rowSize: number;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        reject(new RangeError(`body over ${MAX_BODY_BYTES} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function infer(m: Loaded, body: Buffer): Promise<{ status: number; body: unknown }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return { status: 400, body: { error: 'body is not JSON' } };
  }
  const inputs = (parsed as { inputs?: unknown }).inputs;
  if (!Array.isArray(inputs)) return { status: 400, body: { error: 'expected {"inputs": [...]}' } };
  const flat = inputs.flat(Infinity) as unknown[];
  if (flat.length === 0 || flat.length % m.rowSize !== 0) {
    return { status: 400, body: { error: `expected a multiple of ${m.rowSize} numbers, got ${flat.length}` } };
  }
  const data = new Float32Array(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const v = flat[i];
    if (typeof v !== 'number') return { status: 400, body: { error: 'inputs must be numbers' } };
    data[i] = v;
  }
  const rows = flat.length / m.rowSize;
  const input = m.spec.inputs[0]!;
  const output = m.spec.outputs[0]!;
  const out = await m.session.run({ [input.name]: new ort.Tensor('float32', data, [rows, ...m.rowShape]) });
  const t = out[output.name]!;
  const values = Array.from(t.data as Float32Array);
  const per = values.length / rows;
  const outputs = Array.from({ length: rows }, (_, r) => values.slice(r * per, (r + 1) * per));
  return { status: 200, body: { model: m.spec.name, outputs } };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      host: { type: 'string', default: '127.0.0.1' },
      models: { type: 'string', default: 'iris,text-orientation' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write('usage: node dist/bench/plainServer.js [--port P] [--host H] [--models iris,text-orientation]\n');
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`--port must be 0..65535, got ${values.port}`);
  const names = values.models.split(',').map((s) => s.trim()).filter(Boolean);
  const specs = resolveModels(names);
  if (names.includes('iris') && !existsSync(irisModelPath)) throw new Error(`${irisModelPath} is missing; run npm run build:models`);

  const models = new Map<string, Loaded>();
  for (const spec of specs) {
    const session = await ort.InferenceSession.create(spec.path, {
      intraOpNumThreads: spec.intraOpThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
    const rowShape = spec.inputs[0]!.shape.slice(1);
    models.set(spec.name, { spec, session, rowShape, rowSize: rowShape.reduce((a, b) => a * b, 1) });
  }

  const loop = monitorEventLoopDelay({ resolution: 2 });
  loop.enable();
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method === 'GET' && path === '/ready') return reply(res, 200, { ready: true });
    if (req.method === 'GET' && path === '/metrics') {
      const text =
        '# HELP nodejs_eventloop_lag_max_seconds The maximum recorded event loop delay (since the last scrape).\n' +
        '# TYPE nodejs_eventloop_lag_max_seconds gauge\n' +
        `nodejs_eventloop_lag_max_seconds ${loop.max / 1e9}\n`;
      loop.reset();
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      res.end(text);
      return;
    }
    const m = req.method === 'POST' && path.startsWith('/infer/') ? models.get(decodeURIComponent(path.slice(7))) : undefined;
    if (m === undefined) return reply(res, 404, { error: `no route for ${req.method} ${path}` });
    readBody(req)
      .then((body) => infer(m, body))
      .then(
        (r) => reply(res, r.status, r.body),
        (e: unknown) => reply(res, e instanceof RangeError ? 413 : 500, { error: e instanceof Error ? e.message : String(e) }),
      );
  });
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve) => server.listen(port, values.host, resolve));
  const addr = server.address();
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: typeof addr === 'object' && addr ? addr.port : port })}\n`);

  const shutdown = () => {
    server.closeAllConnections();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2_000).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

main().catch((e: unknown) => {
  process.stderr.write(`plainServer: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
