/**
 * Local multi-node launcher: one OS process per node, all on this machine,
 * each seeded with the others. `npm start` runs it on cluster/local.json.
 * Ctrl-C (or SIGTERM) makes every node leave gracefully, then exits.
 *
 *   node dist/cluster/launch.js [--config FILE] [--nodes N] [--base-port P] [--models A,B]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { projectRoot } from '../src/models/registry.js';
import { OLD_SPACE_FLOOR_FLAG } from '../src/heapGrowth.js';

interface LocalConfig {
  cluster: string;
  host: string;
  models: string;
  nodes: { id: string; port: number }[];
}

const { values } = parseArgs({
  options: {
    config: { type: 'string', default: join(projectRoot, 'cluster', 'local.json') },
    nodes: { type: 'string' },
    'base-port': { type: 'string' },
    models: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help) {
  process.stdout.write('usage: node dist/cluster/launch.js [--config FILE] [--nodes N] [--base-port P] [--models A,B]\n');
  process.exit(0);
}

const config = JSON.parse(readFileSync(values.config!, 'utf8')) as LocalConfig;
const count = values.nodes ? Number(values.nodes) : config.nodes.length;
const basePort = values['base-port'] ? Number(values['base-port']) : config.nodes[0]!.port;
if (!Number.isInteger(count) || count < 1 || count > 32) throw new RangeError(`--nodes must be 1..32, got ${values.nodes}`);
const nodes = Array.from({ length: count }, (_, i) => config.nodes[i] && !values['base-port'] ? config.nodes[i]! : { id: `n${i + 1}`, port: basePort + i });
const seeds = nodes.map((n) => `${config.host}:${n.port}`).join(',');
// A fresh secret per launch unless one is given: local nodes share it through the environment, never argv.
const secret = process.env['ACTORSERVE_CLUSTER_SECRET'] ?? randomBytes(24).toString('hex');
const bin = join(projectRoot, 'bin', 'actorserve.js');

const children = new Map<string, ChildProcess>();
for (const n of nodes) {
  const child = spawn(process.execPath, [OLD_SPACE_FLOOR_FLAG, bin, 'node', '--node-id', n.id, '--port', String(n.port), '--host', config.host,
    '--cluster', config.cluster, '--models', values.models ?? config.models, '--seeds', seeds], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, ACTORSERVE_CLUSTER_SECRET: secret },
  });
  children.set(n.id, child);
  child.on('exit', (code, signal) => {
    children.delete(n.id);
    process.stderr.write(`launcher: node ${n.id} (pid ${child.pid}) exited ${signal ?? code}\n`);
    if (children.size === 0) process.exit(0);
  });
}
process.stderr.write(`launcher: ${nodes.length} nodes on ${nodes.map((n) => `ws://${config.host}:${n.port}/v1/stream`).join(' ')}\n`);

let stopping = false;
const stopAll = (signal: string) => {
  if (stopping) {
    // A second Ctrl-C: stop waiting for the drain.
    for (const c of children.values()) c.kill('SIGKILL');
    return;
  }
  stopping = true;
  process.stderr.write(`launcher: ${signal}: nodes are leaving gracefully (Ctrl-C again to kill)\n`);
  for (const c of children.values()) c.kill('SIGTERM');
};
process.on('SIGINT', () => stopAll('SIGINT'));
process.on('SIGTERM', () => stopAll('SIGTERM'));
