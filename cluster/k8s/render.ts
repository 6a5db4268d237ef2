/**
 * Writes cluster/k8s/actorserve.yaml from manifests.ts.
 *
 *   node dist/cluster/k8s/render.js            rewrite the committed file
 *   node dist/cluster/k8s/render.js --check    exit 1 if the committed file is stale
 *   node dist/cluster/k8s/render.js --stdout [--image I] [--namespace NS] [--replicas N]
 *                                              [--models A,B] [--cluster-domain D]
 *                                              print a customised copy (the committed
 *                                              file always holds the defaults)
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { renderFile, type ManifestOptions } from './manifests.js';

// Walk up rather than hardcode '../..': this runs as cluster/k8s/*.ts and as dist/cluster/k8s/*.js.
function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

function main(argv: string[]): number {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      check: { type: 'boolean' },
      stdout: { type: 'boolean' },
      image: { type: 'string' },
      namespace: { type: 'string' },
      replicas: { type: 'string' },
      models: { type: 'string' },
      'cluster-domain': { type: 'string' },
    },
  });
  const opts: ManifestOptions = {};
  if (values.image !== undefined) opts.image = values.image;
  if (values.namespace !== undefined) opts.namespace = values.namespace;
  if (values.models !== undefined) opts.models = values.models;
  if (values['cluster-domain'] !== undefined) opts.clusterDomain = values['cluster-domain'];
  if (values.replicas !== undefined) {
    if (!/^\d+$/.test(values.replicas)) throw new RangeError(`--replicas must be a positive integer, got ${JSON.stringify(values.replicas)}`);
    opts.replicas = Number(values.replicas);
  }
  const text = renderFile(opts);
  if (values.stdout) {
    process.stdout.write(text);
    return 0;
  }
  if (Object.keys(opts).length > 0) throw new RangeError('--image/--namespace/--replicas/--models/--cluster-domain need --stdout (the committed file holds the defaults)');

  const root = findRepoRoot(dirname(fileURLToPath(import.meta.url)));
  const out = join(root, 'cluster', 'k8s', 'actorserve.yaml');
  const shown = relative(root, out);
  if (values.check) {
    const current = existsSync(out) ? readFileSync(out, 'utf8') : '';
    if (current !== text) {
      console.error(`${shown} is stale: run \`node dist/cluster/k8s/render.js\``);
      return 1;
    }
    console.log(`${shown} is up to date`);
    return 0;
  }
  writeFileSync(out, text);
  console.log(`wrote ${shown}`);
  return 0;
}

try {
  process.exitCode = main(process.argv.slice(2));
} catch (err) {
  console.error(`render: ${err instanceof Error ? err.message : String(err)}`);
  process.exitCode = 2;
}
