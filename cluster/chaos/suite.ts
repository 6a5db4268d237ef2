/**
 * The chaos suite: `npm run chaos -- [--short] [--only NAME[,NAME]] [--help]`.
 *
 * Runs each scenario of scenarios.ts on real node processes, prints a table
 * and the details, writes everything (throughput series included) to
 * cluster/chaos/results/<timestamp>.json, and exits 1 when a scenario failed
 * its pass criteria. The full run starts a fresh cluster per scenario
 * (about 3 min on 2 cores); --short shares one cluster per kind, shortens
 * the load and leaves out the no-fault control (about 1 min). Ctrl-C kills
 * every node it started.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { projectRoot } from '../../src/models/registry.js';
import { killAllNodesSync } from './NodeProcess.js';
import { details, fullReport, summaryTable } from './report.js';
import { SCENARIOS, TIMINGS, freshClusters, runScenarios, scenarioByName, scenarioNames, sharedClusters, type Mode } from './scenarios.js';

const USAGE = `usage: npm run chaos -- [--short] [--only NAME[,NAME...]] [--shared|--fresh] [--help]

  --short    the CI-sized run: shorter load, one kill repeat, clusters shared between scenarios
  --only     run only these scenarios (repeatable or comma-separated; any scenario, in any mode)
  --shared   share one cluster per kind between scenarios (default with --short)
  --fresh    a fresh cluster per scenario (default for the full run)

scenarios: ${scenarioNames.join(', ')}
results:   printed, and written to cluster/chaos/results/<timestamp>.json
exit code: 0 when every scenario passed (0 lost, 0 duplicates, 0 errors, recovery ≤ 3 s), 1 otherwise
`;

function fail(message: string): never {
  process.stderr.write(`chaos: ${message}\n${USAGE}`);
  process.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      short: { type: 'boolean' },
      only: { type: 'string', multiple: true },
      shared: { type: 'boolean' },
      fresh: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (e) {
  fail((e as Error).message);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (values.shared && values.fresh) fail('--shared and --fresh exclude each other');
const mode: Mode = values.short ? 'short' : 'full';
let defs = SCENARIOS.filter((s) => mode === 'full' || !s.fullOnly);
if (values.only) {
  try {
    defs = values.only.flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean).map(scenarioByName);
  } catch (e) {
    fail((e as Error).message);
  }
}
const shared = values.shared ?? (values.fresh ? false : mode === 'short');

process.on('exit', killAllNodesSync);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\nchaos: ${sig}: killing every node started\n`);
    killAllNodesSync();
    process.exit(130);
  });
}

const started = Date.now();
const log = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}\n`);
log(`${defs.length} scenario(s), ${mode} run, ${shared ? 'shared' : 'fresh'} clusters, timings ${JSON.stringify(TIMINGS[mode])}`);
const results = await runScenarios(defs, {
  mode,
  clusters: shared ? sharedClusters() : freshClusters(),
  log,
  onResult: (r) => {
    log(`${r.name}: ${r.ok ? 'PASS' : 'FAIL'}`);
    process.stderr.write(`${summaryTable([r])}\n${details(r)}\n${r.ok ? '' : `${r.logs.join('\n')}\n`}\n`);
  },
});

process.stdout.write(`\n${fullReport(results)}\n\ntotal ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
const dir = join(projectRoot, 'cluster', 'chaos', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `${new Date(started).toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(file, `${JSON.stringify({ mode, shared, startedAt: new Date(started).toISOString(), durationMs: Date.now() - started, timings: TIMINGS[mode], results }, (_k, v: unknown) => (v === Infinity ? '+Inf' : v), 2)}\n`);
process.stdout.write(`results written to ${file}\n`);
process.exit(results.every((r) => r.ok) ? 0 : 1);
