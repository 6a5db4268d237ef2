/**
 * `actorserve` command line. Options are validated at once; a bad one prints
 * the reason and the usage and exits 2.
 */
import { parseArgs } from 'node:util';
import { existsSync } from 'node:fs';
import { ActorserveNode } from './actors/Node.js';
import { createLogger } from './log.js';
import { builtinModelNames, irisModelPath, resolveModels, type ModelOverrides } from './models/registry.js';
import { buildIrisModel } from './models/builders/iris.js';

export const USAGE = `actorserve — distributed ML inference on supervised actors

Usage:
  actorserve node [options]     start a node serving models over ws://HOST:PORT/v1/stream
  actorserve --help

Node options:
  --port N            TCP port for clients and HTTP (default 8080; 0 picks a free port)
  --host ADDR         address to bind (default 127.0.0.1; 0.0.0.0 for all)
  --node-id ID        this node's id, reported in every result (default n1)
  --models A,B        models to serve (default ${builtinModelNames.join(',')})
  --workers K         worker threads per model (default 1)
  --threads T         onnxruntime intra-op threads per worker (default per model)
  --max-batch N       cap on rows per batch (default per model)
  --max-queue N       cap on queued requests per model (default per model)
  --max-in-flight N   unanswered requests per connection (default 1024)
  --max-frame-bytes N largest client frame in bytes (default 8388608)
  --log-level L       trace|debug|info|warn|error|silent (default info)

Environment: ACTORSERVE_PORT, ACTORSERVE_NODE_ID, ACTORSERVE_MODELS set the same
defaults as --port, --node-id and --models.
`;

const intOpt = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) throw new RangeError(`--${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
};

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      port: { type: 'string' },
      host: { type: 'string' },
      'node-id': { type: 'string' },
      models: { type: 'string' },
      workers: { type: 'string' },
      threads: { type: 'string' },
      'max-batch': { type: 'string' },
      'max-queue': { type: 'string' },
      'max-in-flight': { type: 'string' },
      'max-frame-bytes': { type: 'string' },
      'log-level': { type: 'string' },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  if (positionals[0] !== 'node' || positionals.length > 1) throw new RangeError(`unknown command ${JSON.stringify(positionals.join(' '))}`);

  const level = values['log-level'] ?? 'info';
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(level)) throw new RangeError(`--log-level ${level} is not a level`);
  const nodeId = values['node-id'] ?? process.env['ACTORSERVE_NODE_ID'] ?? 'n1';
  const log = createLogger({ level: level as 'info' });
  const names = (values.models ?? process.env['ACTORSERVE_MODELS'] ?? builtinModelNames.join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  const overrides: ModelOverrides = {};
  const set = (k: keyof ModelOverrides, v: number | undefined) => { if (v !== undefined) overrides[k] = v; };
  set('workers', intOpt('workers', values.workers));
  set('intraOpThreads', intOpt('threads', values.threads));
  set('maxBatch', intOpt('max-batch', values['max-batch']));
  set('maxQueue', intOpt('max-queue', values['max-queue']));
  const models = resolveModels(names, overrides);

  if (names.includes('iris') && !existsSync(irisModelPath)) {
    const r = buildIrisModel(irisModelPath);
    log.info({ testAccuracy: r.testAccuracy, path: irisModelPath }, 'built the iris model');
  }

  const maxInFlight = intOpt('max-in-flight', values['max-in-flight']);
  const maxFrameBytes = intOpt('max-frame-bytes', values['max-frame-bytes']);
  const node = await ActorserveNode.start({
    nodeId,
    models,
    host: values.host ?? '127.0.0.1',
    port: intOpt('port', values.port ?? process.env['ACTORSERVE_PORT']) ?? 8080,
    ...(maxInFlight !== undefined ? { maxInFlight } : {}),
    ...(maxFrameBytes !== undefined ? { maxFrameBytes } : {}),
    log,
  });

  await new Promise<void>((resolve) => {
    const shutdown = (signal: string) => {
      log.info({ signal }, 'stopping');
      node.stop().then(resolve, (e: Error) => {
        log.error({ err: e.message }, 'error while stopping');
        resolve();
      });
    };
    process.once('SIGINT', () => shutdown('SIGINT'));
    process.once('SIGTERM', () => shutdown('SIGTERM'));
  });
  return 0;
}
