/**
 * Starting the systems under test as child processes: an actorserve node
 * (`node bin/actorserve.js node ...`, the command users run) and the plain
 * HTTP baseline (`node dist/bench/plainServer.js`). Each is ready when its
 * readiness endpoint answers 200.
 */
import { join } from 'node:path';
import { Child } from '../cluster/child.js';
import { projectRoot } from '../src/models/registry.js';

export const PLAIN_SERVER_PATH = join(projectRoot, 'dist', 'bench', 'plainServer.js');
export const REFUSER_PATH = join(projectRoot, 'dist', 'bench', 'refuser.js');

const READY_TIMEOUT_MS = 90_000;

/** Extra flags for every node the bench starts (`--node-args`). */
let extraNodeArgs: readonly string[] = [];
export function setExtraNodeArgs(args: readonly string[]): void {
  extraNodeArgs = args;
}

export interface RunningServer {
  proc: Child;
  id: string;
  port: number;
  base: string;
}

export interface NodeStart {
  id: string;
  port: number;
  models: readonly string[];
  /** Ports of the seed nodes on 127.0.0.1 (none: a node alone). */
  seeds?: readonly number[];
  /** Shared cluster secret, passed in the environment (never argv). */
  secret?: string;
  cluster?: string;
}

/**
 * Spawns an actorserve node; `ready` resolves once `GET /v2/health/ready`
 * answers 200. The node logs at warn so logging costs nothing on the path
 * being measured.
 */
export function spawnActorserveNode(o: NodeStart): { server: RunningServer; ready: Promise<void> } {
  const args = ['--port', String(o.port), '--node-id', o.id, '--models', o.models.join(','), '--log-level', 'warn'];
  if (o.seeds !== undefined && o.seeds.length > 0) args.push('--seeds', o.seeds.map((p) => `127.0.0.1:${p}`).join(','));
  if (o.cluster !== undefined) args.push('--cluster', o.cluster);
  args.push(...extraNodeArgs);
  const env = { ...process.env };
  if (o.secret !== undefined) env['ACTORSERVE_CLUSTER_SECRET'] = o.secret;
  else delete env['ACTORSERVE_CLUSTER_SECRET'];
  const proc = Child.node(`actorserve node ${o.id}`, args, { cwd: projectRoot, env });
  const base = `http://127.0.0.1:${o.port}`;
  return { server: { proc, id: o.id, port: o.port, base }, ready: proc.ready(`${base}/v2/health/ready`, READY_TIMEOUT_MS) };
}

export async function startActorserveNode(o: NodeStart): Promise<RunningServer> {
  const { server, ready } = spawnActorserveNode(o);
  await ready;
  return server;
}

/** A bench server script (`dist/bench/*.js`) on `port`, ready when its `GET /ready` answers 200. */
async function startScript(name: string, id: string, path: string, port: number, args: readonly string[] = []): Promise<RunningServer> {
  const proc = Child.spawn(name, [path, '--port', String(port), ...args], { cwd: projectRoot });
  const base = `http://127.0.0.1:${port}`;
  await proc.ready(`${base}/ready`, READY_TIMEOUT_MS);
  return { proc, id, port, base };
}

export const startPlainServer = (port: number, models: readonly string[]): Promise<RunningServer> =>
  startScript('plain HTTP server', 'plain', PLAIN_SERVER_PATH, port, ['--models', models.join(',')]);

/**
 * bench/refuser.ts: answers every request `overloaded` at once; the floor of
 * time-to-refusal. With `busyNice`, one thread spins beside it at that nice.
 */
export const startRefuser = (port: number, busyNice?: number): Promise<RunningServer> =>
  startScript('refusal floor server', 'refuser', REFUSER_PATH, port, busyNice === undefined ? [] : ['--busy-nice', String(busyNice)]);
