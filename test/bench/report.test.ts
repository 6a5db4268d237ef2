/**
 * The bench's report pipeline on a real, short run: the built script with
 * `--quick --duration 1 --models iris` (every phase, a few seconds each),
 * then the files it writes. Benchmarks are not tests: nothing here checks a
 * timing value, only the report's structure and that measured figures are
 * positive numbers.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rerunBasis } from '../../bench/overload.js';
import { renderCharts, renderSummary } from '../../bench/report.js';
import { Child } from '../../cluster/child.js';
import type { BenchResults, OverloadResults, PhaseResult } from '../../bench/results.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BENCH = join(ROOT, 'dist', 'bench', 'bench.js');
const RUN_LIMIT_MS = 240_000;

interface Run {
  code: number | string | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs the built bench; past the limit, SIGINT (it kills its children by pid), then SIGKILL. */
async function runBench(args: string[]): Promise<Run> {
  const t0 = performance.now();
  const child = Child.spawn('bench', [BENCH, ...args], { cwd: ROOT });
  const out = { stdout: [] as string[], stderr: [] as string[] };
  child.onLine((line, stream) => out[stream].push(line));
  const limit = setTimeout(() => void child.stop(5_000, 'SIGINT'), RUN_LIMIT_MS);
  const exit = await child.exited;
  clearTimeout(limit);
  return { code: exit.signal ?? exit.code, stdout: out.stdout.join('\n'), stderr: out.stderr.join('\n'), ms: performance.now() - t0 };
}

/** Well-formed enough: one <svg> root, every element closed in order. */
function checkSvg(text: string): void {
  expect(text.trimStart().startsWith('<svg')).toBe(true);
  expect(text.trimEnd().endsWith('</svg>')).toBe(true);
  const stack: string[] = [];
  for (const m of text.matchAll(/<(\/?)([a-zA-Z][\w:-]*)\b[^>]*?(\/?)>/g)) {
    const [, closing, name, selfClosing] = m;
    if (selfClosing) continue;
    if (closing) expect(stack.pop()).toBe(name);
    else stack.push(name!);
  }
  expect(stack).toEqual([]);
}

const positive = (x: unknown) => typeof x === 'number' && Number.isFinite(x) && x > 0;

function expectMeasured(p: PhaseResult | null, what: string): void {
  expect(p, what).not.toBeNull();
  expect(positive(p!.throughput), `${what} throughput`).toBe(true);
  expect(positive(p!.ok), `${what} ok`).toBe(true);
  for (const k of ['p50', 'p90', 'p99', 'p999', 'max'] as const) expect(positive(p!.latencyMs[k]), `${what} ${k}`).toBe(true);
  expect(p!.latencyMs.p50).toBeLessThanOrEqual(p!.latencyMs.p99);
  expect(p!.histogram.length).toBeGreaterThan(0);
}

describe('npm run bench', () => {
  it('documents every flag under --help and refuses a bad value with exit code 2', () => {
    const help = spawnSync(process.execPath, [BENCH, '--help'], { encoding: 'utf8', timeout: 20_000 });
    expect(help.status).toBe(0);
    for (const flag of ['--duration', '--quick', '--models', '--concurrency', '--sweep', '--cluster', '--out', '--generators', '--overload', '--overload-factor', '--overload-mix', '--overload-warmup', '--overload-rerun-above', '--overload-runs']) {
      expect(help.stdout).toContain(flag);
    }
    const bad = spawnSync(process.execPath, [BENCH, '--duration', 'soon'], { encoding: 'utf8', timeout: 20_000 });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--duration/);
    const badMix = spawnSync(process.execPath, [BENCH, '--overload-mix', '0.5,0.5'], { encoding: 'utf8', timeout: 20_000 });
    expect(badMix.status).toBe(2);
    expect(badMix.stderr).toMatch(/--overload-mix/);
    const badWarmup = spawnSync(process.execPath, [BENCH, '--overload-warmup', '0'], { encoding: 'utf8', timeout: 20_000 });
    expect(badWarmup.status).toBe(2);
    expect(badWarmup.stderr).toMatch(/--overload-warmup must be a positive number/);
    const badRerun = spawnSync(process.execPath, [BENCH, '--overload-rerun-above=-1'], { encoding: 'utf8', timeout: 20_000 });
    expect(badRerun.status).toBe(2);
    expect(badRerun.stderr).toMatch(/--overload-rerun-above must be a number of at least 0/);
    const badRuns = spawnSync(process.execPath, [BENCH, '--overload-runs', '0'], { encoding: 'utf8', timeout: 20_000 });
    expect(badRuns.status).toBe(2);
    expect(badRuns.stderr).toMatch(/--overload-runs must be a positive number/);
  });

  describe('a --quick run on iris', () => {
    let dir: string;
    let run: Run;
    let results: BenchResults;

    beforeAll(async () => {
      expect(existsSync(BENCH), `${BENCH} is missing: npm run build`).toBe(true);
      dir = mkdtempSync(join(tmpdir(), 'actorserve-bench-'));
      // --overload-rerun-above 0: the overload always runs a second time, so the run goes through both tries.
      // --overload-runs 2: the whole phase twice, on two fresh nodes.
      run = await runBench(['--quick', '--duration', '1', '--models', 'iris', '--overload-rerun-above', '0', '--overload-runs', '2', '--out', dir]);
      expect(existsSync(join(dir, 'results.json')), `no results.json; bench said:\n${run.stderr}`).toBe(true);
      results = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as BenchResults;
    }, RUN_LIMIT_MS + 15_000);

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('finishes, prints the summary and writes results.json, summary.md and the charts', () => {
      expect([0, 1]).toContain(run.code); // 1: it finished but recorded a failed phase (listed in results.errors)
      const files = readdirSync(dir).sort();
      for (const f of ['results.json', 'summary.md', 'latency-vs-load-iris.svg', 'throughput-timeline.svg', 'requests-per-node.svg']) expect(files).toContain(f);
      expect(run.stdout).toContain('# actorserve bench');
      console.info(`bench --quick --duration 1 --models iris: ${(run.ms / 1000).toFixed(1)} s`);
    });

    it('holds the baselines and the system figures, all positive, with the ratio fields', () => {
      expect(results.schema).toBe('actorserve-bench/1');
      expect(results.commandLine).toContain('--quick');
      expect(results.machine.cpus).toBeGreaterThan(0);
      expect(results.machine.loadAverageAtStart).toHaveLength(3);
      const iris = results.models.find((m) => m.model === 'iris')!;
      expect(iris).toBeDefined();
      expect(iris.ceiling).not.toBeNull();
      expect(iris.ceiling!.byBatch.map((p) => p.batch)).toEqual([1, 4, 8, 16, 32]);
      for (const p of iris.ceiling!.byBatch) expect(positive(p.itemsPerSec)).toBe(true);
      expect(positive(iris.ceiling!.best.itemsPerSec)).toBe(true);
      expectMeasured(iris.plain.closed, 'plain closed loop');
      expectMeasured(iris.actorserve.closed, 'actorserve closed loop');
      expect(iris.plain.closed!.concurrency).toBe(iris.actorserve.closed!.concurrency);
      expect(iris.actorserve.sweep.length).toBeGreaterThan(0);
      for (const p of [...iris.actorserve.sweep, ...iris.plain.sweep]) {
        expect(p.mode).toBe('open');
        expect(positive(p.offeredRate)).toBe(true);
        // Open loop: one send-lateness sample per measured request, whatever became of it.
        const measured = p.ok + Object.values(p.errors).reduce((a, b) => a + b, 0) + p.unanswered;
        expect(p.generator.sendLateMs?.count, p.label).toBe(measured);
        expect(p.generator.sendLateMs!.p50).toBeLessThanOrEqual(p.generator.sendLateMs!.p99);
      }
      for (const p of [iris.plain.closed, iris.actorserve.closed]) expect(p!.generator.sendLateMs, 'closed loop sends on answers, not a schedule').toBeUndefined();
      for (const k of ['throughputVsCeilingBest', 'throughputVsCeilingBatch1', 'throughputVsPlain', 'p50VsPlain', 'p99VsPlain', 'plainThroughputVsCeilingBatch1'] as const) {
        expect(positive(iris.ratios[k]), k).toBe(true);
      }
      const server = iris.actorserve.closed!.server;
      expect(positive(server.cpuPerRequestUs)).toBe(true);
      expect(positive(server.eventLoopDelayMaxMs)).toBe(true);
    });

    it('holds the cluster figures: CPU per request of one node and of the cluster, their ratio, the join and the kill', () => {
      const cl = results.cluster!;
      expect(cl).not.toBeNull();
      expect(cl.nodes).toBe(3);
      expect(cl.target).toBe(1.5);
      expectMeasured(cl.solo, 'one node alone');
      expect(positive(cl.solo!.server.cpuPerRequestUs)).toBe(true);
      const failed = (phase: string) => results.errors.some((e) => e.phase.startsWith(phase));
      expect(Object.keys(cl.cpuPerRequestRatio).sort()).toEqual(['entry', 'separate', 'spread']);
      if (!failed('cluster: separate nodes')) {
        expectMeasured(cl.separate, 'separate nodes');
        expect(Object.keys(cl.separate!.perNode).sort()).toEqual(['s1', 's2', 's3']);
        expect(positive(cl.cpuPerRequestRatio.separate)).toBe(true);
      }
      if (!failed('cluster: clients on every node')) {
        expectMeasured(cl.spread, 'cluster, clients on every node');
        expect(positive(cl.cpuPerRequestRatio.spread)).toBe(true);
        expect(Object.keys(cl.spread!.perNode).sort()).toEqual(['n1', 'n2', 'n3']);
      }
      // A figure is either measured (positive) or its failure is in results.errors.
      expect(cl.join).not.toBeNull();
      expect(positive(cl.join!.spawnToReadyMs) || failed('cluster: n4')).toBe(true);
      expect(positive(cl.join!.spawnToFirstResultMs) || failed('cluster: join')).toBe(true);
      expect(cl.kill).not.toBeNull();
      expect(positive(cl.kill!.killToDownMs) || failed('cluster: kill')).toBe(true);
      expect(cl.churn).not.toBeNull();
      expect(cl.churn!.events.map((e) => e.label)).toEqual(expect.arrayContaining(['n4 spawned', 'SIGKILL n3']));
      expect(cl.churn!.timeline.ok.some((v) => v > 0)).toBe(true);
    });

    it('holds the overload figures: peak, the unloaded and overloaded open loops by priority, the three targets and the node afterwards', () => {
      const ov = results.overload!;
      expect(ov, 'the overload phase runs by default').not.toBeNull();
      expect(ov.model).toBe('text-orientation');
      expect(ov.factor).toBe(3);
      expect(ov.mix).toEqual({ high: 0.1, normal: 0.6, low: 0.3 });
      const failed = (what: string) => results.errors.some((e) => e.phase.startsWith(`overload text-orientation (run 1 of 2)${what}`));
      const why = JSON.stringify(results.errors);
      // A figure is either measured or its failure is in results.errors.
      if (failed(': node start') || (failed('') && ov.closedLoop === null)) return;
      expect(ov.closedLoop?.source, why).toBe('measured here');
      expect(positive(ov.peak), why).toBe(true);
      expect(['closed loop', 'open loop at 100%', 'closed loop after']).toContain(ov.peakSource);
      // Peak brackets the overload: the closed loop just before and just after it, on the same node.
      // With --overload-rerun-above 0 the overload ran twice: first at 3× the basis set before it, then at 3× the closed loop after that.
      const basis = Math.max(ov.closedLoop!.throughput, ov.openAtPeak?.throughput ?? 0);
      if (!failed(': open loop 3× peak') && !failed(': closed loop after')) {
        const first = ov.firstTry;
        expect(first, why).toBeDefined();
        expect(first!.rerunAbove).toBe(0);
        expect(first!.offeredBasis).toBeCloseTo(basis, 6);
        expect(first!.overload.offeredRate).toBeCloseTo(3 * basis, 0);
        expect(rerunBasis(basis, first!.closedLoopAfter, 0)).toBe(first!.closedLoopAfter);
        expect(ov.offeredBasis).toBe(first!.closedLoopAfter);
        expect(ov.peak).toBeCloseTo(Math.max(basis, first!.closedLoopAfter, ov.closedLoopAfter ?? 0), 6);
        expect(run.stdout).toMatch(/the first try, at 3× [0-9,]+ req\/s: goodput ÷ peak/);
      }
      for (const [p, what] of [[ov.unloaded, ': unloaded reference'], [ov.overload, ': open loop 3× peak']] as const) {
        if (failed(what)) continue;
        expect(p, `${what}: ${why}`).not.toBeNull();
        expect(p!.mode).toBe('open');
        expect(Object.keys(p!.byPriority ?? {}).sort()).toEqual(['high', 'low', 'normal']);
        const scheduled = Object.values(p!.byPriority!).map((c) => c.scheduled);
        // The mix is exact over any run: the window, a difference of two prefixes, holds a tenth of high to within two.
        expect(Math.abs(p!.byPriority!.high!.scheduled - 0.1 * scheduled.reduce((a, b) => a + b, 0))).toBeLessThanOrEqual(2);
        expect(p!.overloaded).toBeDefined();
      }
      const o = ov.overload!;
      if (!failed(': open loop 3× peak')) {
        expect(o.offeredRate).toBeCloseTo(3 * ov.offeredBasis!, 0);
        expect(positive(o.throughput)).toBe(true);
        // --quick warms the overload up for 0.5 s, or until the model queue would have filled; the floors for 0.5 s.
        expect(o.warmupS).toBeGreaterThanOrEqual(0.5);
        for (const floor of [ov.refusalFloor, ov.refusalFloorBusy]) expect(floor?.warmupS).toBe(0.5);
        expect(ov.targets.goodputVsPeak.value).toBeCloseTo(o.throughput / ov.peak, 3);
        expect(o.overloaded!.missingRetryAfter).toBeLessThanOrEqual(o.overloaded!.count);
        expect(o.overloaded!.count).toBe(Object.values(o.byPriority!).reduce((a, c) => a + (c.errors['overloaded'] ?? 0), 0));
        // The floors run against bench/refuser.ts, which refuses every frame and has nothing else to fail.
        for (const floor of [ov.refusalFloor, ov.refusalFloorBusy]) {
          expect(floor, why).toBeTruthy();
          expect(floor!.overloaded!.count, why).toBeGreaterThan(0);
        }
        // The event loop of the node and of each floor: one figure each, read from /proc over the window.
        for (const p of [o, ov.refusalFloor, ov.refusalFloorBusy]) {
          expect(p!.server.mainThreads, p!.label).toHaveLength(1);
          expect(positive(p!.server.mainThreads![0]!.cpuPct), p!.label).toBe(true);
          expect(p!.server.mainThreads![0]!.preemptedPerS).toBeGreaterThanOrEqual(0);
        }
        // The node's inference thread ran through the overload: its busiest thread besides the event loop has CPU to show.
        expect(positive(o.server.mainThreads![0]!.busiestOtherPct), JSON.stringify(o.server.mainThreads)).toBe(true);
      }
      // Each target is a number with its verdict, or null and unmeasured.
      for (const t of Object.values(ov.targets)) expect(t.value === null ? t.met === null : typeof t.met === 'boolean').toBe(true);
      expect(ov.after !== null || failed(': requests after the overload')).toBe(true);
      if (ov.after !== null) expect(ov.after.sent).toBe(9);
    });

    it('runs the whole overload phase a second time on a fresh node, kept beside the first', () => {
      expect(results.overloadRepeats).toHaveLength(1);
      const [second] = results.overloadRepeats!;
      const why = JSON.stringify(results.errors);
      if (results.errors.some((e) => e.phase.startsWith('overload text-orientation (run 2 of 2)'))) return;
      expect(second, why).not.toBeNull();
      expect(second!.model).toBe('text-orientation');
      expect(positive(second!.peak), why).toBe(true);
      const pids = (ov: OverloadResults | null | undefined) => ov?.overload?.server.pids ?? [];
      expect(pids(second)).toHaveLength(1);
      expect(pids(results.overload), 'a fresh node for each run').not.toEqual(pids(second));
      expect(second!.refusalFloor?.overloaded?.count, why).toBeGreaterThan(0);
    });

    it('stops every process it started', () => {
      expect(results.processes.length).toBeGreaterThanOrEqual(10);
      const alive = results.processes.filter(({ pid }) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      });
      expect(alive).toEqual([]);
    });

    it('writes charts that are well-formed SVG', () => {
      const svgs = readdirSync(dir).filter((f) => f.endsWith('.svg'));
      expect(svgs.length).toBeGreaterThanOrEqual(4);
      for (const f of svgs) checkSvg(readFileSync(join(dir, f), 'utf8'));
      const timeline = readFileSync(join(dir, 'throughput-timeline.svg'), 'utf8');
      expect(timeline).toContain('SIGKILL n3');
      expect(timeline).toContain('n4 spawned');
    });

    it('writes summary.md with the comparison table and the cluster figures', () => {
      const md = readFileSync(join(dir, 'summary.md'), 'utf8');
      expect(md).toMatch(/^\| model \| system \| throughput \/s \| p50 ms \| p99 ms \|/m);
      expect(md).toMatch(/^\|---\|---\|---:\|/m);
      expect(md).toMatch(/^\| iris \| in-process ceiling, best/m);
      expect(md).toMatch(/^\| iris \| plain HTTP server/m);
      expect(md).toMatch(/^\| iris \| actorserve, 1 node/m);
      expect(md).toContain('3-node local cluster');
      expect(md).toMatch(/CPU per request, one node alone/);
      expect(md).toMatch(/SIGKILL of n3 → marked down/);
      expect(md).toMatch(/spawn of n4 → its first result/);
      // Both runs side by side, each target's median and count met, then run 1 in full.
      const series = md.indexOf('## Overload (text-orientation, 3× peak): 2 runs');
      expect(series).toBeGreaterThan(-1);
      expect(md.indexOf('## Overload (text-orientation, 3× peak): run 1 of 2, in full')).toBeGreaterThan(series);
      expect(md).toMatch(/^\| 1 \| [0-9,]+ \| [0-9,]+( → [0-9,]+)+ \| [0-9.]+×( ⚠)? \|/m);
      expect(md).toMatch(/^\| 2 \| ([0-9,]+ \| [0-9,]+( → [0-9,]+)+ \| [0-9.]+×( ⚠)? \||failed \(see Errors\))/m);
      expect(md).toMatch(/^\| goodput ÷ peak \(at least 90%\) \| .* \| [0-2] of [1-2] \|$/m);
      const overload = md.slice(md.indexOf('## Overload (text-orientation, 3× peak): run 1 of 2, in full'));
      expect(overload).toMatch(/^\| target \| value \| bound \|$/m);
      expect(overload).toMatch(/^\| goodput ÷ peak \| .* \| at least 90%(: met ✅|: missed ❌| \(not measured\)) \|$/m);
      expect(overload).toMatch(/^\| p99 time to an `overloaded` answer \| .* \| under 5 ms(: met ✅|: missed ❌| \(not measured\)) \|$/m);
      expect(overload).toMatch(/^\| high-priority p99 under overload ÷ unloaded \| .* \| under 3×(: met ✅|: missed ❌| \(not measured\)) \|$/m);
      expect(overload).toMatch(/^\| requests after the overload/m);
      if (results.overload?.overload) expect(overload).toMatch(/^\| 3× peak( ⚠)? \| high \|/m);
      for (const f of readdirSync(dir).filter((x) => x.endsWith('.svg'))) expect(md).toContain(`](${f})`);
    });

    it('renders the same summary and charts again from results.json alone', () => {
      const charts = renderCharts(results);
      expect(Object.keys(charts).sort()).toEqual(readdirSync(dir).filter((f) => f.endsWith('.svg')).sort());
      for (const [f, svg] of Object.entries(charts)) expect(svg).toBe(readFileSync(join(dir, f), 'utf8'));
      expect(renderSummary(results, Object.keys(charts))).toBe(readFileSync(join(dir, 'summary.md'), 'utf8'));
    });
  });
});
