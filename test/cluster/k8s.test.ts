import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { OLD_SPACE_FLOOR_FLAG } from '../../src/heapGrowth.js';
import { parseAllDocuments } from 'yaml';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Service } from 'kubernetes-models/v1/Service';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import {
  buildManifests,
  renderYaml,
  GENERATED_HEADER,
  PEERS_SERVICE,
  CLIENT_SERVICE,
  SECRET_NAME,
  SECRET_KEY,
  type Manifest,
} from '../../cluster/k8s/manifests.js';

const repo = (p: string) => fileURLToPath(new URL(`../../${p}`, import.meta.url));

function parts(objs: Manifest[] = buildManifests()) {
  const services = objs.filter((o): o is Service => o instanceof Service);
  const peers = services.find((s) => s.metadata?.name === PEERS_SERVICE);
  const clients = services.find((s) => s.metadata?.name === CLIENT_SERVICE);
  const sts = objs.find((o): o is StatefulSet => o instanceof StatefulSet);
  const pdb = objs.find((o): o is PodDisruptionBudget => o instanceof PodDisruptionBudget);
  const hpa = objs.find((o): o is HorizontalPodAutoscaler => o instanceof HorizontalPodAutoscaler);
  if (!peers || !clients || !sts || !pdb || !hpa) throw new Error('a manifest is missing');
  const pod = sts.spec?.template;
  const container = pod?.spec?.containers[0];
  if (!pod || !container) throw new Error('the StatefulSet has no pod template or container');
  return { peers, clients, sts, pdb, hpa, pod, container };
}

/** Every key/value of a matchLabels/selector appears in the pod's labels. */
const selects = (selector: Record<string, string> | undefined, labels: Record<string, string> | undefined) =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

describe('Kubernetes manifests', () => {
  it('builds the peer and client Services, the StatefulSet, a PDB and an HPA, each valid against the Kubernetes schema', () => {
    const objs = buildManifests();
    expect(objs.map((o) => `${o.kind}/${o.metadata?.name}`)).toEqual([
      `Service/${PEERS_SERVICE}`,
      `Service/${CLIENT_SERVICE}`,
      'StatefulSet/actorserve',
      'PodDisruptionBudget/actorserve',
      'HorizontalPodAutoscaler/actorserve',
    ]);
    for (const o of objs) expect(() => o.validate()).not.toThrow();
  });

  it('validation can fail: an invalid copy of a manifest is rejected', () => {
    const { sts, hpa } = parts();
    const copy = () => new StatefulSet(structuredClone(sts.toJSON()));
    expect(() => copy().validate()).not.toThrow(); // the copy itself is fine

    const badPort = copy();
    (badPort.spec!.template.spec!.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = 'abc';
    expect(() => badPort.validate()).toThrow(/containerPort/);

    const noSelector = copy();
    delete (noSelector.spec as { selector?: unknown }).selector;
    expect(() => noSelector.validate()).toThrow(/selector/);

    const badHpa = new HorizontalPodAutoscaler(structuredClone(hpa.toJSON()));
    (badHpa.spec as { maxReplicas: unknown }).maxReplicas = 'ten';
    expect(() => badHpa.validate()).toThrow(/maxReplicas/);
  });

  it('the committed cluster/k8s/actorserve.yaml is the rendered output (re-run render.js when this fails)', () => {
    const committed = readFileSync(repo('cluster/k8s/actorserve.yaml'), 'utf8');
    expect(committed.startsWith(GENERATED_HEADER)).toBe(true);
    expect(committed).toContain('node dist/cluster/k8s/render.js');
    const parse = (text: string) =>
      parseAllDocuments(text).map((d) => {
        if (d.errors.length > 0) throw d.errors[0];
        return d.toJS();
      });
    const expected = parse(renderYaml(buildManifests()));
    expect(expected).toHaveLength(5);
    expect(parse(committed)).toEqual(expected);
  });

  it('runs a StatefulSet whose node ids come from the pod names and that finds peers through the headless Service', () => {
    const { sts, peers, container } = parts();
    expect(sts.spec?.replicas).toBe(3);
    expect(sts.spec?.podManagementPolicy).toBe('Parallel');
    expect(sts.spec?.serviceName).toBe(PEERS_SERVICE);
    const env = new Map((container.env ?? []).map((e) => [e.name, e]));
    expect(env.get('ACTORSERVE_NODE_ID')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    expect(env.get('POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.namespace');
    const args = container.args ?? [];
    expect(args[0]).toBe('node');
    expect(args[args.indexOf('--host') + 1]).toBe('0.0.0.0');
    expect(args[args.indexOf('--port') + 1]).toBe('8080');
    expect(args[args.indexOf('--discovery') + 1]).toBe('dns:actorserve-peers.$(POD_NAMESPACE).svc.cluster.local');
    expect([...(container.command ?? []), ...args].join(' ')).toMatch(new RegExp(`^node ${OLD_SPACE_FLOOR_FLAG} \\S*bin/actorserve\\.js node `));

    expect(peers.spec?.clusterIP).toBe('None');
    expect(peers.spec?.publishNotReadyAddresses).toBe(true);
    expect(selects(peers.spec?.selector, sts.spec?.template.metadata?.labels)).toBe(true);
    expect(peers.spec?.ports?.[0]?.port).toBe(8080);
  });

  it('serves clients through a ClusterIP Service on 8080 in front of ready pods', () => {
    const { clients, pod, container } = parts();
    expect(clients.spec?.clusterIP).toBeUndefined();
    expect(clients.spec?.type ?? 'ClusterIP').toBe('ClusterIP');
    expect(clients.spec?.publishNotReadyAddresses).not.toBe(true);
    expect(clients.spec?.ports?.map((p) => [p.port, p.targetPort])).toEqual([[8080, 'http']]);
    expect(container.ports?.find((p) => p.name === 'http')?.containerPort).toBe(8080);
    expect(selects(clients.spec?.selector, pod.metadata?.labels)).toBe(true);
  });

  it('probes readiness and liveness, leaves gracefully in preStop, and bounds its resources', () => {
    const { pod, container } = parts();
    expect(container.readinessProbe?.httpGet?.path).toBe('/v2/health/ready');
    expect(container.readinessProbe?.httpGet?.port).toBe('http');
    expect(container.livenessProbe?.httpGet?.path).toBe('/v2/health/live');
    const preStop = container.lifecycle?.preStop?.exec?.command ?? [];
    expect(preStop[0]).toBe('node');
    expect(preStop[1]).toMatch(/bin\/actorserve\.js$/);
    expect(preStop.slice(2)).toEqual(['leave', '--port', '8080']);
    expect(pod.spec?.terminationGracePeriodSeconds).toBe(60);
    expect(container.resources?.requests).toEqual({ cpu: '1', memory: '1Gi' });
    expect(container.resources?.limits).toEqual({ cpu: '2', memory: '2Gi' });
    expect(pod.spec?.securityContext?.runAsNonRoot).toBe(true);
  });

  it('takes the cluster secret from a user-created Secret and ships no secret value', () => {
    const objs = buildManifests();
    const { container } = parts(objs);
    expect(objs.some((o) => (o.kind as string) === 'Secret')).toBe(false);
    const secret = container.env?.find((e) => e.name === 'ACTORSERVE_CLUSTER_SECRET');
    expect(secret?.value).toBeUndefined();
    expect(secret?.valueFrom?.secretKeyRef).toEqual({ name: SECRET_NAME, key: SECRET_KEY });
    expect(container.args?.join(' ')).not.toMatch(/cluster-secret/);
  });

  it('has a PDB allowing one voluntary disruption, selecting exactly the StatefulSet pods', () => {
    const { pdb, sts } = parts();
    expect(pdb.spec?.maxUnavailable).toBe(1);
    expect(pdb.spec?.selector?.matchLabels).toEqual(sts.spec?.selector.matchLabels);
    expect(selects(pdb.spec?.selector?.matchLabels, sts.spec?.template.metadata?.labels)).toBe(true);
    expect(selects(sts.spec?.selector.matchLabels, sts.spec?.template.metadata?.labels)).toBe(true);
  });

  it('autoscales the StatefulSet by name on CPU 70 %, 3 to 10 nodes, scaling down one node at a time', () => {
    const { hpa, sts } = parts();
    expect(hpa.apiVersion).toBe('autoscaling/v2');
    expect(hpa.spec?.scaleTargetRef).toEqual({ apiVersion: sts.apiVersion, kind: 'StatefulSet', name: sts.metadata?.name });
    expect([hpa.spec?.minReplicas, hpa.spec?.maxReplicas]).toEqual([3, 10]);
    const cpu = hpa.spec?.metrics?.find((m) => m.type === 'Resource' && m.resource?.name === 'cpu');
    expect(cpu?.resource?.target).toEqual({ type: 'Utilization', averageUtilization: 70 });
    expect(hpa.spec?.behavior?.scaleDown?.policies).toEqual([{ type: 'Pods', value: 1, periodSeconds: 120 }]);
  });

  it('honours namespace, image and replicas options and refuses a bad replica count', () => {
    const objs = buildManifests({ namespace: 'ml', image: 'registry.example/actorserve:1.2.3', replicas: 5 });
    for (const o of objs) expect(o.metadata?.namespace).toBe('ml');
    const { sts, hpa, container } = parts(objs);
    expect(container.image).toBe('registry.example/actorserve:1.2.3');
    expect(sts.spec?.replicas).toBe(5);
    expect(hpa.spec?.minReplicas).toBe(5);
    for (const o of buildManifests()) expect(o.metadata?.namespace).toBeUndefined();
    expect(() => buildManifests({ replicas: 0 })).toThrow(RangeError);
    expect(() => buildManifests({ replicas: 1.5 })).toThrow(RangeError);
  });
});

describe('Dockerfile', () => {
  const path = repo('Dockerfile');
  /** Instructions with continuations joined and comments dropped. */
  const instructions = () =>
    readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => !/^\s*#/.test(l))
      .join('\n')
      .replace(/\\\n/g, ' ')
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .map((l) => {
        const m = /^(\w+)\s+(.*)$/.exec(l);
        return { op: (m?.[1] ?? l).toUpperCase(), arg: m?.[2] ?? '' };
      });

  it('exists and starts bin/actorserve.js as a non-root user from a multi-stage node:20-bookworm-slim build', () => {
    expect(existsSync(path)).toBe(true);
    const ins = instructions();
    const froms = ins.filter((i) => i.op === 'FROM');
    expect(froms.length).toBeGreaterThanOrEqual(2);
    const text = readFileSync(path, 'utf8');
    expect(text).toContain('node:20-bookworm-slim');
    const lastFrom = ins.lastIndexOf(froms[froms.length - 1]!);
    const runtime = ins.slice(lastFrom);
    const start = runtime.filter((i) => i.op === 'ENTRYPOINT' || i.op === 'CMD').map((i) => i.arg).join(' ');
    expect(start).toMatch(new RegExp(`"node",\\s*"${OLD_SPACE_FLOOR_FLAG}",\\s*"\\S*bin/actorserve\\.js"`));
    expect(start).toMatch(/"node",\s*"--host",\s*"0\.0\.0\.0"/);
    const user = runtime.filter((i) => i.op === 'USER').at(-1)?.arg;
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(runtime.some((i) => i.op === 'EXPOSE' && i.arg.split(/\s+/).includes('8080'))).toBe(true);
    expect(ins.some((i) => i.op === 'RUN' && /npm ci\b/.test(i.arg))).toBe(true);
    // No secret baked in.
    expect(ins.filter((i) => i.op === 'ENV' || i.op === 'ARG').map((i) => i.arg).join('\n')).not.toMatch(/SECRET/i);
  });

  it('has a .dockerignore that keeps build outputs and git out of the context', () => {
    const entries = readFileSync(repo('.dockerignore'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    for (const e of ['node_modules', 'dist', 'models', '.git', 'bench/results']) expect(entries).toContain(e);
  });
});
