/**
 * `npm run bench` (build first: `npm run build`; `npm run bench -- --help`
 * documents every flag). For each model it measures, in one run:
 *
 *  1. the in-process ceiling (onnxruntime-node on this thread, the node's
 *     session settings, best batch size);
 *  2. a plain one-request-per-run HTTP JSON server (bench/plainServer.ts);
 *  3. actorserve, one node; both servers at the same closed-loop concurrency,
 *     then an open-loop sweep at shares of actorserve's capacity;
 *
 * then (`--cluster N`) CPU per request through an N-node cluster against one
 * node alone, a join and a SIGKILL under load, and (`--overload MODEL`) a
 * fresh node at a multiple of its peak with a priority mix. Load comes from separate
 * generator processes (bench/loadgen.ts). Results go to
 * bench/results/<timestamp>/: results.json, summary.md and SVG charts.
 *
 * Every loop is bounded in count and time; every child is stopped by its pid
 * at the end, on error and on SIGINT/SIGTERM.
 */
import { readFileSync } from 'node:fs';
import { arch, availableParallelism, cpus, loadavg, platform, totalmem } from 'node:os';
import { join } from 'node:path';
import { killAllChildrenSync, startedChildren, stopAllChildren } from '../cluster/child.js';
import { projectRoot, resolveModels } from '../src/models/registry.js';
import { measureCeiling } from './ceiling.js';
import { runCluster } from './cluster.js';
import { runPhase, type PhaseOptions } from './loadPhase.js';
import { defaultConcurrency, parseOptions, USAGE, type BenchOptions } from './options.js';
import { runOverload } from './overload.js';
import type { ModelInput } from './payload.js';
import { freePorts } from './processes.js';
import { writeReport } from './report.js';
import { RESULTS_SCHEMA, type BenchError, type BenchResults, type ModelResults, type OverloadResults, type PhaseResult } from './results.js';
import { setExtraNodeArgs, startActorserveNode, startPlainServer, type RunningServer } from './servers.js';

const t0 = performance.now();
const log = (line: string) => process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${line}\n`);

function modelInput(model: string): ModelInput {
  const [spec] = resolveModels([model]);
  const input = spec!.inputs[0]!;
  return { model, inputName: input.name, rowShape: input.shape.slice(1) };
}

/**
 * Drain allowance after a phase: time for an overloaded server to answer its backlog, bounded
 * (what is still unanswered then goes into the histogram at its lower bound).
 */
const drainMs = (o: BenchOptions, durationS: number) => Math.min(15_000, Math.max(o.quick ? 1_000 : 2_000, 1.5 * durationS * 1000));

function commandLine(argv: readonly string[]): string {
  const quote = (a: string) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`);
  const args = argv.map(quote).join(' ');
  return process.env['npm_lifecycle_event'] === 'bench' ? `npm run bench${args ? ` -- ${args}` : ''}` : `node dist/bench/bench.js${args ? ` ${args}` : ''}`;
}

function onnxruntimeVersion(): string {
  try {
    return (JSON.parse(readFileSync(join(projectRoot, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const ratioOf = (a: number | null | undefined, b: number | null | undefined): number | null =>
  a === null || a === undefined || b === null || b === undefined || !(b > 0) || !Number.isFinite(a) ? null : round(a / b, 4);

async function attempt<T>(errors: BenchError[], phase: string, f: () => Promise<T>): Promise<T | null> {
  try {
    return await f();
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    errors.push({ phase, message });
    log(`  ${phase} failed: ${message.split('\n')[0]}`);
    return null;
  }
}

async function run(o: BenchOptions, argv: readonly string[]): Promise<BenchResults> {
  const startedAt = new Date();
  const errors: BenchError[] = [];
  const results: BenchResults = {
    schema: RESULTS_SCHEMA,
    startedAt: startedAt.toISOString(),
    finishedAt: '',
    commandLine: commandLine(argv),
    options: { ...o },
    machine: {
      node: process.version,
      platform: platform(),
      arch: arch(),
      cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
      cpus: availableParallelism(),
      totalMemGiB: round(totalmem() / 2 ** 30, 1),
      loadAverageAtStart: loadavg().map((x) => round(x, 2)),
      loadAverageAtEnd: [],
      onnxruntime: onnxruntimeVersion(),
    },
    models: [],
    cluster: null,
    overload: null,
    processes: startedChildren,
    errors,
  };
  const inputs = new Map(o.models.map((m) => [m, modelInput(m)]));

  // 1. In-process ceilings, while nothing else of ours runs.
  const ceilings = new Map<string, ModelResults['ceiling']>();
  for (const m of o.models) {
    log(`in-process ceiling: ${m}, batches ${o.ceilingBatches.join(',')} ...`);
    ceilings.set(m, await attempt(errors, `${m}: in-process ceiling`, () => measureCeiling(m, { batches: o.ceilingBatches, secondsPerBatch: o.ceilingSeconds })));
  }

  // 2 and 3. The plain server and one node, both serving every model, loaded in turn.
  const [plainPort, nodePort] = await freePorts(2);
  log('starting the plain HTTP server and one actorserve node ...');
  const [plain, node] = await Promise.all([
    o.plain ? attempt(errors, 'plain HTTP server start', () => startPlainServer(plainPort!, o.models)) : Promise.resolve(null),
    attempt(errors, 'actorserve node start', () => startActorserveNode({ id: 'bench', port: nodePort!, models: o.models })),
  ]);
  try {
    for (const m of o.models) {
      const input = inputs.get(m)!;
      const concurrency = o.concurrency[m]!;
      const base = { input, generators: o.generators, warmupS: o.warmupS };
      const onPlain = (p: Omit<PhaseOptions, 'system' | 'target' | 'serverPids' | 'metricsUrls' | keyof typeof base>, s: RunningServer) =>
        runPhase({ ...base, ...p, system: 'plain', target: { kind: 'http', host: '127.0.0.1', port: s.port }, serverPids: [s.proc.pid], metricsUrls: [`${s.base}/metrics`] });
      const onNode = (p: Omit<PhaseOptions, 'system' | 'target' | 'serverPids' | 'metricsUrls' | keyof typeof base>, s: RunningServer) =>
        runPhase({ ...base, ...p, system: 'actorserve', target: { kind: 'ws', urls: [`ws://127.0.0.1:${s.port}/v1/stream`] }, serverPids: [s.proc.pid], metricsUrls: [`${s.base}/metrics`] });
      const mr: ModelResults = {
        model: m,
        concurrency,
        ceiling: ceilings.get(m) ?? null,
        plain: { closed: null, sweep: [] },
        actorserve: { closed: null, sweep: [] },
        ratios: { throughputVsCeilingBest: null, throughputVsCeilingBatch1: null, throughputVsPlain: null, p50VsPlain: null, p99VsPlain: null, plainThroughputVsCeilingBatch1: null },
      };
      results.models.push(mr);
      const closed = { mode: { kind: 'closed' as const, concurrency }, connections: o.connections, durationS: o.durationS, drainTimeoutMs: drainMs(o, o.durationS) };
      if (plain) {
        log(`${m}: plain HTTP server, closed loop, ${concurrency} in flight, ${o.warmupS}+${o.durationS} s ...`);
        mr.plain.closed = await attempt(errors, `${m}: plain closed loop`, () => onPlain({ ...closed, label: `${m}: plain HTTP, closed loop` }, plain));
      }
      if (node) {
        log(`${m}: actorserve, closed loop, ${concurrency} in flight over ${o.connections} connections, ${o.warmupS}+${o.durationS} s ...`);
        mr.actorserve.closed = await attempt(errors, `${m}: actorserve closed loop`, () => onNode({ ...closed, label: `${m}: actorserve, closed loop` }, node));
      }
      const capacity = mr.actorserve.closed?.throughput ?? mr.plain.closed?.throughput ?? 0;
      if (capacity > 0) {
        for (const pct of o.sweepPct) {
          const rate = Math.max(1, (capacity * pct) / 100);
          const open = { mode: { kind: 'open' as const, rate }, connections: o.connections, durationS: o.sweepDurationS, drainTimeoutMs: drainMs(o, o.sweepDurationS), offeredPctOfCapacity: pct };
          log(`${m}: open loop at ${Math.round(rate)} req/s (${pct}% of ${Math.round(capacity)}), ${o.warmupS}+${o.sweepDurationS} s each ...`);
          if (node) {
            const p = await attempt(errors, `${m}: actorserve open loop ${pct}%`, () => onNode({ ...open, label: `${m}: actorserve, open loop ${pct}%` }, node));
            if (p) mr.actorserve.sweep.push(p);
          }
          if (plain) {
            const p = await attempt(errors, `${m}: plain open loop ${pct}%`, () => onPlain({ ...open, label: `${m}: plain HTTP, open loop ${pct}%` }, plain));
            if (p) mr.plain.sweep.push(p);
          }
        }
      }
      const a: PhaseResult | null = mr.actorserve.closed;
      const pl: PhaseResult | null = mr.plain.closed;
      const c = mr.ceiling;
      mr.ratios = {
        throughputVsCeilingBest: ratioOf(a?.throughput, c?.best.itemsPerSec),
        throughputVsCeilingBatch1: ratioOf(a?.throughput, c?.batch1?.itemsPerSec),
        throughputVsPlain: ratioOf(a?.throughput, pl?.throughput),
        p50VsPlain: ratioOf(a?.latencyMs.p50, pl?.latencyMs.p50),
        p99VsPlain: ratioOf(a?.latencyMs.p99, pl?.latencyMs.p99),
        plainThroughputVsCeilingBatch1: ratioOf(pl?.throughput, c?.batch1?.itemsPerSec),
      };
    }
  } finally {
    log('stopping the plain server and the node ...');
    await Promise.all([plain, node].map((s) => s?.proc.stop()));
  }

  // 4. The cluster (iris, keyless).
  if (o.cluster >= 2) {
    const model = 'iris';
    const soloCapacity = results.models.find((mr) => mr.model === model)?.actorserve.closed?.throughput ?? null;
    const concurrency = o.concurrency[model] ?? 256;
    results.cluster = await runCluster({
      nodes: o.cluster,
      input: inputs.get(model) ?? modelInput(model),
      soloCapacity,
      ratePct: o.clusterRatePct,
      concurrency,
      connections: o.connections,
      generators: o.generators,
      warmupS: o.warmupS,
      durationS: o.durationS,
      drainTimeoutMs: drainMs(o, o.durationS),
      log,
      errors,
    });
  }
  // 5. Overload: a fresh node, one model, a multiple of its peak; --overload-runs times, a fresh node each.
  if (o.overload !== null) {
    const model = o.overload;
    const runs: (OverloadResults | null)[] = [];
    for (let i = 1; i <= o.overloadRuns; i++) {
      const of = o.overloadRuns > 1 ? ` (run ${i} of ${o.overloadRuns})` : '';
      if (of !== '') log(`overload${of}`);
      // This run's errors, named with its number when there are several.
      const runErrors: BenchError[] = [];
      runs.push(await attempt(runErrors, `overload ${model}`, async () => {
        const [spec] = resolveModels([model]);
        return runOverload({
          input: inputs.get(model) ?? modelInput(model),
          maxQueue: spec!.batching.maxQueue,
          factor: o.overloadFactor,
          mix: o.overloadMix,
          earlierClosedThroughput: results.models.find((mr) => mr.model === model)?.actorserve.closed?.throughput ?? null,
          concurrency: o.concurrency[model] ?? defaultConcurrency(model),
          connections: o.connections,
          generators: o.generators,
          warmupS: o.warmupS,
          overloadWarmupS: o.overloadWarmupS,
          rerunAbove: o.overloadRerunAbove,
          durationS: o.durationS,
          sweepDurationS: o.sweepDurationS,
          drainMs: (s) => drainMs(o, s),
          log,
          errors: runErrors,
        });
      }));
      errors.push(...runErrors.map((e) => ({ ...e, phase: e.phase.replace(`overload ${model}`, `overload ${model}${of}`) })));
    }
    results.overload = runs[0] ?? null;
    if (runs.length > 1) results.overloadRepeats = runs.slice(1);
  }
  results.machine.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
  results.finishedAt = new Date().toISOString();
  return results;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let o: BenchOptions;
  try {
    o = parseOptions(argv);
  } catch (e) {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n\n${USAGE}\n`);
    process.exitCode = 2;
    return;
  }
  if (o.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`bench: ${sig}: stopping every child process`);
      killAllChildrenSync();
      process.exit(130);
    });
  }
  setExtraNodeArgs(o.nodeArgs);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = o.out ?? join(projectRoot, 'bench', 'results', stamp);
  let results: BenchResults;
  try {
    results = await run(o, argv);
  } finally {
    await stopAllChildren(3_000);
  }
  const written = writeReport(results, dir);
  process.stdout.write(readFileSync(join(dir, 'summary.md'), 'utf8'));
  log(`report: ${dir} (${written.files.join(', ')}) in ${Math.round((performance.now() - t0) / 1000)} s`);
  if (results.errors.length > 0) process.exitCode = 1;
}

main().catch((e: unknown) => {
  killAllChildrenSync();
  process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 1;
});
