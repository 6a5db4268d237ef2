/**
 * Kubernetes manifests for an actorserve cluster, built with `kubernetes-models`
 * so every object is checked against the Kubernetes OpenAPI schema before it
 * is written out. `node dist/cluster/k8s/render.js` renders them into
 * cluster/k8s/actorserve.yaml (committed; a test fails when it goes stale).
 *
 * What is built (see docs/kubernetes.md for how the pieces fit together):
 * - Service `actorserve-peers`: headless, publishNotReadyAddresses, the DNS name
 *   that `--discovery dns:` resolves to find the other nodes (joining ones too);
 * - Service `actorserve`: ClusterIP for clients, only ready nodes behind it;
 * - StatefulSet `actorserve`: node id = pod name (downward API), Parallel pod
 *   management, readiness/liveness probes, preStop `actorserve leave`;
 * - PodDisruptionBudget: at most one node voluntarily down at a time;
 * - HorizontalPodAutoscaler (autoscaling/v2): CPU 70 %, 3..10 nodes, scaling
 *   down one node at a time so each leave can drain and hand off.
 * No Secret is shipped: the cluster secret is created by the user
 * (`kubectl create secret generic actorserve --from-literal=cluster-secret=...`)
 * and only referenced here.
 */
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet';
import { Service } from 'kubernetes-models/v1/Service';
import type { IContainer } from 'kubernetes-models/v1/Container';
import { stringify } from 'yaml';
import { OLD_SPACE_FLOOR_FLAG } from '../../src/heapGrowth.js';

export const APP_NAME = 'actorserve';
/** Headless Service whose A/AAAA records list every node (ready or not). */
export const PEERS_SERVICE = 'actorserve-peers';
/** ClusterIP Service for clients (ready nodes only). */
export const CLIENT_SERVICE = 'actorserve';
/** Secret the user creates; the manifests only reference it. */
export const SECRET_NAME = 'actorserve';
export const SECRET_KEY = 'cluster-secret';
/** One port for clients (ws /v1/stream), peers (ws /cluster) and HTTP. */
export const PORT = 8080;
export const PORT_NAME = 'http';
export const DEFAULT_IMAGE = 'actorserve:0.1.0';
export const DEFAULT_REPLICAS = 3;
export const DEFAULT_MODELS = 'iris,text-orientation';
/** Where the Dockerfile installs the app. */
export const APP_DIR = '/app';
export const CLI = `${APP_DIR}/bin/actorserve.js`;
/** UID/GID of the `node` user in node:20-bookworm-slim (the Dockerfile's USER). */
export const RUN_AS = 1000;

/** Labels on every pod; the selectors of the Services, the StatefulSet and the PDB. */
export const POD_LABELS: Readonly<Record<string, string>> = Object.freeze({
  'app.kubernetes.io/name': APP_NAME,
  'app.kubernetes.io/component': 'node',
});

export interface ManifestOptions {
  /** metadata.namespace on every object; left out, `kubectl apply -n NS` decides. */
  namespace?: string;
  image?: string;
  replicas?: number;
  /** Comma-separated model names (ACTORSERVE_MODELS). */
  models?: string;
  /** The cluster's DNS domain, used in the discovery name (default cluster.local). */
  clusterDomain?: string;
}

export type Manifest = Service | StatefulSet | PodDisruptionBudget | HorizontalPodAutoscaler;

/**
 * The discovery name. The namespace comes from the downward API at run time
 * (`$(POD_NAMESPACE)` is expanded by the kubelet in `args`), so the same YAML
 * works in any namespace. A fully qualified name, because `dns.resolve4/6`
 * (c-ares) does not apply resolv.conf search domains.
 */
export function discoveryName(clusterDomain = 'cluster.local'): string {
  return `${PEERS_SERVICE}.$(POD_NAMESPACE).svc.${clusterDomain}`;
}

export function buildManifests(opts: ManifestOptions = {}): Manifest[] {
  const image = opts.image ?? DEFAULT_IMAGE;
  const replicas = opts.replicas ?? DEFAULT_REPLICAS;
  if (!Number.isInteger(replicas) || replicas < 1) throw new RangeError(`replicas must be a positive integer, got ${replicas}`);
  const maxReplicas = Math.max(10, replicas);
  const labels = { ...POD_LABELS, 'app.kubernetes.io/part-of': APP_NAME };
  const meta = (name: string) => ({
    name,
    labels: { ...labels },
    ...(opts.namespace !== undefined ? { namespace: opts.namespace } : {}),
  });
  const selector = { matchLabels: { ...POD_LABELS } };

  const peers = new Service({
    metadata: meta(PEERS_SERVICE),
    spec: {
      clusterIP: 'None',
      // Joining (not yet ready) pods must find each other, or nobody becomes ready.
      publishNotReadyAddresses: true,
      selector: { ...POD_LABELS },
      ports: [{ name: PORT_NAME, port: PORT, targetPort: PORT_NAME, protocol: 'TCP' }],
    },
  });

  const clients = new Service({
    metadata: meta(CLIENT_SERVICE),
    spec: {
      type: 'ClusterIP',
      selector: { ...POD_LABELS },
      ports: [{ name: PORT_NAME, port: PORT, targetPort: PORT_NAME, protocol: 'TCP' }],
    },
  });

  const container: IContainer = {
    name: 'node',
    image,
    imagePullPolicy: 'IfNotPresent',
    workingDir: APP_DIR,
    command: ['node', OLD_SPACE_FLOOR_FLAG, CLI],
    args: [
      'node',
      '--host', '0.0.0.0',
      '--port', String(PORT),
      '--discovery', `dns:${discoveryName(opts.clusterDomain)}`,
      '--log-level', 'info',
    ],
    env: [
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      // Stable node ids: actorserve-0, actorserve-1, ... (a restart is a new incarnation).
      { name: 'ACTORSERVE_NODE_ID', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'ACTORSERVE_MODELS', value: opts.models ?? DEFAULT_MODELS },
      { name: 'ACTORSERVE_CLUSTER_SECRET', valueFrom: { secretKeyRef: { name: SECRET_NAME, key: SECRET_KEY } } },
    ],
    ports: [{ name: PORT_NAME, containerPort: PORT, protocol: 'TCP' }],
    readinessProbe: {
      httpGet: { path: '/v2/health/ready', port: PORT_NAME },
      periodSeconds: 5,
      timeoutSeconds: 2,
      failureThreshold: 2,
      successThreshold: 1,
    },
    livenessProbe: {
      httpGet: { path: '/v2/health/live', port: PORT_NAME },
      initialDelaySeconds: 10,
      periodSeconds: 10,
      timeoutSeconds: 3,
      failureThreshold: 3,
    },
    lifecycle: {
      // Drain and hand off before SIGTERM; SIGTERM also leaves gracefully.
      preStop: { exec: { command: ['node', CLI, 'leave', '--port', String(PORT)] } },
    },
    resources: {
      requests: { cpu: '1', memory: '1Gi' },
      limits: { cpu: '2', memory: '2Gi' },
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: [{ name: 'tmp', mountPath: '/tmp' }],
  };

  const statefulSet = new StatefulSet({
    metadata: meta(APP_NAME),
    spec: {
      serviceName: PEERS_SERVICE,
      replicas,
      // Start and stop nodes together; the cluster layer handles joins itself.
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate' },
      selector,
      template: {
        metadata: {
          labels: { ...labels },
          annotations: {
            'prometheus.io/scrape': 'true',
            'prometheus.io/port': String(PORT),
            'prometheus.io/path': '/metrics',
          },
        },
        spec: {
          terminationGracePeriodSeconds: 60,
          automountServiceAccountToken: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: RUN_AS,
            runAsGroup: RUN_AS,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { ...POD_LABELS } } },
                },
              ],
            },
          },
          containers: [container],
          volumes: [{ name: 'tmp', emptyDir: {} }],
        },
      },
    },
  });

  const pdb = new PodDisruptionBudget({
    metadata: meta(APP_NAME),
    spec: { maxUnavailable: 1, selector: { matchLabels: { ...POD_LABELS } } },
  });

  const hpa = new HorizontalPodAutoscaler({
    metadata: meta(APP_NAME),
    spec: {
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'StatefulSet', name: APP_NAME },
      minReplicas: replicas,
      maxReplicas,
      metrics: [{ type: 'Resource', resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 70 } } }],
      behavior: {
        // Remove one node at a time, slowly: each leave drains and hands off its queues.
        scaleDown: { stabilizationWindowSeconds: 300, policies: [{ type: 'Pods', value: 1, periodSeconds: 120 }] },
      },
    },
  });

  const all: Manifest[] = [peers, clients, statefulSet, pdb, hpa];
  for (const m of all) m.validate();
  return all;
}

/** One multi-document YAML string (`---` between objects). */
export function renderYaml(objs: readonly Manifest[]): string {
  return objs.map((o) => stringify(o.toJSON(), { lineWidth: 0 })).join('---\n');
}

export const GENERATED_HEADER =
  '# Generated by `node dist/cluster/k8s/render.js` from cluster/k8s/manifests.ts; do not edit by hand.\n';

/** The committed file's text: header + the default manifests. */
export function renderFile(opts: ManifestOptions = {}): string {
  return GENERATED_HEADER + renderYaml(buildManifests(opts));
}
