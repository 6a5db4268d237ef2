/**
 * Real multi-process clusters on loopback for tests: free ports, seeds,
 * the secret, and stopping every process by its own pid.
 */
import { freePorts } from '../../cluster/ports.js';
import { spawnNode, type NodeProcess } from './spawnNode.js';

export const SECRET = 'test-cluster-secret';

export { freePorts };

export interface ClusterMember {
  id: string;
  port: number;
  node: NodeProcess;
}

export function nodeArgs(id: string, port: number, seeds: number[], models = 'iris', extra: string[] = []): string[] {
  return ['--port', String(port), '--node-id', id, '--models', models, '--seeds', seeds.map((p) => `127.0.0.1:${p}`).join(','), '--log-level', 'info', ...extra];
}

export async function startCluster(ids: string[], models = 'iris', extra: string[] = []): Promise<ClusterMember[]> {
  const ports = await freePorts(ids.length);
  return Promise.all(ids.map(async (id, i) => ({
    id,
    port: ports[i]!,
    node: await spawnNode(nodeArgs(id, ports[i]!, ports, models, extra), 60_000, { ACTORSERVE_CLUSTER_SECRET: SECRET }),
  })));
}

export async function stopAll(members: readonly (ClusterMember | undefined)[]): Promise<void> {
  await Promise.all(members.map((m) => m?.node.stop('SIGKILL')));
}

export interface ViewEntry {
  nodeId: string;
  incarnation: number;
  status: string;
  linked: boolean;
}

export async function viewOf(port: number): Promise<ViewEntry[]> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/cluster`);
  return ((await res.json()) as { members: ViewEntry[] }).members;
}

/** Polls until `check` passes or the time is up; returns how long it took. */
export async function eventually(check: () => Promise<boolean>, timeoutMs: number, stepMs = 25): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await check().catch(() => false)) return performance.now() - start;
    if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

export const statusOf = (view: ViewEntry[], id: string) => view.find((m) => m.nodeId === id)?.status;
