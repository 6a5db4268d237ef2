/**
 * Membership with real node processes on loopback.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnNode } from '../helpers/spawnNode.js';
import { SECRET, eventually, nodeArgs, startCluster, statusOf, stopAll, viewOf, type ClusterMember } from '../helpers/cluster.js';

const started: ClusterMember[] = [];
afterAll(() => stopAll(started));

describe('membership across real processes', () => {
  it('converges to the same view on three nodes, detects a SIGKILLed node within 3 s on both survivors, and takes a restarted node back as a new incarnation', async () => {
    const nodes = await startCluster(['a', 'b', 'c']);
    started.push(...nodes);
    const [a, b, c] = nodes as [ClusterMember, ClusterMember, ClusterMember];
    const summary = async (port: number) =>
      (await viewOf(port)).map((m) => `${m.nodeId}:${m.incarnation}:${m.status}`).join(',');
    await eventually(async () => {
      const views = await Promise.all(nodes.map((n) => summary(n.port)));
      return views.every((v) => v === views[0]) && views[0]!.split(',').every((e) => e.endsWith(':up'));
    }, 10_000);
    const before = await viewOf(a.port);
    expect(before.map((m) => m.nodeId)).toEqual(['a', 'b', 'c']);
    const oldIncarnation = before.find((m) => m.nodeId === 'c')!.incarnation;

    c.node.proc.kill('SIGKILL');
    const killedAt = performance.now();
    await Promise.all([a, b].map((n) => eventually(async () => statusOf(await viewOf(n.port), 'c') === 'down', 5_000, 20)));
    const detectMs = performance.now() - killedAt;
    expect(detectMs).toBeLessThan(3_000);

    const restarted = await spawnNode(nodeArgs('c', c.port, [a.port, b.port], 'iris'), 60_000, { ACTORSERVE_CLUSTER_SECRET: SECRET });
    started.push({ id: 'c2', port: c.port, node: restarted });
    await eventually(async () => {
      const views = await Promise.all([a, b].map((n) => viewOf(n.port)));
      return views.every((v) => {
        const m = v.find((e) => e.nodeId === 'c');
        return m !== undefined && m.status === 'up' && m.incarnation > oldIncarnation;
      });
    }, 10_000);
  });

  it('refuses a peer with the wrong cluster secret and logs it, and keeps it out of the view', async () => {
    const [a] = await startCluster(['solo']);
    started.push(a!);
    const intruder = await spawnNode(nodeArgs('intruder', 0, [a!.port], 'iris'), 60_000, { ACTORSERVE_CLUSTER_SECRET: 'not-the-secret' });
    started.push({ id: 'intruder', port: intruder.port, node: intruder });
    await eventually(async () => a!.node.lines.some((l) => (l as { msg?: string; reason?: string }).msg === 'peer refused'), 5_000);
    const refusal = a!.node.lines.find((l) => (l as { msg?: string }).msg === 'peer refused') as { reason: string };
    expect(refusal.reason).toMatch(/bad proof/);
    expect((await viewOf(a!.port)).map((m) => m.nodeId)).toEqual(['solo']);
    // Neither secret appears in any log line.
    for (const line of [...a!.node.lines, ...intruder.lines]) {
      const text = JSON.stringify(line);
      expect(text).not.toContain(SECRET);
      expect(text).not.toContain('not-the-secret');
    }
  });
});
