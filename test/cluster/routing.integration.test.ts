/**
 * Requests across real node processes: cross-node execution, keyed
 * affinity, join and graceful leave under load.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { RawClient, irisInput } from '../helpers/RawClient.js';
import { expectEveryResult, IrisLoad } from '../helpers/load.js';
import { spawnNode } from '../helpers/spawnNode.js';
import { SECRET, eventually, freePorts, nodeArgs, startCluster, statusOf, stopAll, viewOf, type ClusterMember } from '../helpers/cluster.js';

const started: ClusterMember[] = [];
afterAll(() => stopAll(started));

describe('requests across a three-node cluster', () => {
  it('gives a client on node A results computed on B and C, each request answered exactly once', async () => {
    const nodes = await startCluster(['a', 'b', 'c']);
    started.push(...nodes);
    await eventually(async () => (await viewOf(nodes[0]!.port)).filter((m) => m.status === 'up' && m.linked).length === 3, 10_000);
    const client = await RawClient.connect(nodes[0]!.node.url);
    const report = await new IrisLoad(client, { window: 256, maxRequests: 4000, maxMs: 20_000, prefix: 'x' }).done;
    expect(report).toMatchObject({ sent: 4000, results: 4000, errors: {}, duplicates: 0, lost: 0, foreign: 0 });
    expect(Object.keys(report.byNode).sort()).toEqual(['a', 'b', 'c']);
    client.close();
    // Keyed routing bounds loads, so every entry point makes the same choice for the same view of
    // the loads: let a few heartbeats (200 ms apart) carry the burst's loads back to zero first.
    await new Promise((r) => setTimeout(r, 1_000));

    // Keyed requests: the same key goes to the same node from any entry point. A heartbeat can catch
    // one of these requests in flight: for up to a heartbeat its node then counts as loaded (1 of 1
    // outstanding is over ⌈1.25 · 2 / 3⌉) to the others but not to itself, so the entry points' views
    // differ, and a key they disagree on is asked again from all of them after a quiet spell.
    const ownersOf = async (keys: readonly number[]) => {
      const owners = new Map<number, Set<string>>();
      for (const entry of nodes) {
        const c = await RawClient.connect(entry.node.url);
        for (const k of keys) {
          const f = await c.request({ id: `${entry.id}-${k}-${Math.random()}`, model: 'iris', key: `user-${k}`, inputs: irisInput([5, 3, 1.5, 0.2]) });
          expect(f.t).toBe('result');
          if (f.t === 'result') owners.set(k, (owners.get(k) ?? new Set()).add(f.node));
        }
        c.close();
      }
      return owners;
    };
    const owners = await ownersOf(Array.from({ length: 12 }, (_, k) => k));
    for (let round = 0; round < 3; round++) {
      const split = [...owners].filter(([, set]) => set.size > 1).map(([k]) => k);
      if (split.length === 0) break;
      await new Promise((r) => setTimeout(r, 500));
      for (const [k, set] of await ownersOf(split)) owners.set(k, set);
    }
    for (const [k, set] of owners) expect([...set], `owners of user-${k}`).toHaveLength(1);
    expect(new Set([...owners.values()].map((s) => [...s][0])).size).toBeGreaterThan(1);
  });

  it('lets a fourth node join under load and take work, then leave gracefully mid-stream with nothing lost', async () => {
    const nodes = await startCluster(['p', 'q', 'r']);
    started.push(...nodes);
    const [p] = nodes as [ClusterMember];
    await eventually(async () => (await viewOf(p.port)).filter((m) => m.status === 'up').length === 3, 10_000);
    const client = await RawClient.connect(p.node.url);
    let sawD = 0;
    const load = new IrisLoad(client, {
      window: 128, maxRequests: 200_000, maxMs: 40_000, prefix: 'jl',
      onResult: (f) => void (f.node === 's' && sawD++),
    });

    const [dPort] = await freePorts(1);
    const d = await spawnNode(nodeArgs('s', dPort!, nodes.map((n) => n.port)), 60_000, { ACTORSERVE_CLUSTER_SECRET: SECRET });
    started.push({ id: 's', port: dPort!, node: d });
    await eventually(async () => sawD > 50, 15_000);
    expect(statusOf(await viewOf(p.port), 's')).toBe('up');

    // Graceful leave mid-stream (SIGTERM is what Kubernetes sends).
    const exitCode = d.stop('SIGTERM');
    expect(await exitCode).toBe(0);
    const servedByD = sawD;
    await eventually(async () => statusOf(await viewOf(p.port), 's') !== 'up', 5_000);
    await new Promise((r) => setTimeout(r, 500)); // the stream goes on without it
    load.stop();
    const report = await load.done;
    client.close();
    expect(servedByD).toBeGreaterThan(50);
    expectEveryResult(report, 1001);
  });
});
