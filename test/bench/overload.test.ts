/**
 * The overload phase's verdicts and its report section, on hand-made
 * figures: which side of each bound a value falls, and how the section
 * prints met, missed and unmeasured targets.
 */
import { describe, expect, it } from 'vitest';
import type { LatencySummary } from '../../bench/histogram.js';
import { overloadTargets, rerunBasis } from '../../bench/overload.js';
import { median, renderOverload, renderOverloadSeries, renderSummary, runUp } from '../../bench/report.js';
import type { BenchResults, OverloadResults, PhaseResult, PriorityPhase } from '../../bench/results.js';

const lat = (p99: number, count = 100): LatencySummary => ({ count, p50: p99 / 2, p90: p99 * 0.9, p99, p999: p99, max: p99, mean: p99 / 2 });

function prio(p99: number, ok = 100, scheduled = 100): PriorityPhase {
  return { scheduled, ok, okShare: ok / scheduled, throughput: ok, errors: scheduled > ok ? { overloaded: scheduled - ok } : {}, unanswered: 0, latencyMs: lat(p99, ok), histogram: '', serverMs: lat(p99 / 2, ok) };
}

function phase(o: { throughput: number; highP99: number; overloadedP99?: number; offered?: number }): PhaseResult {
  return {
    label: 'x', system: 'actorserve', model: 'text-orientation', mode: 'open', concurrency: null, offeredRate: o.offered ?? 300, offeredPctOfCapacity: 300,
    connections: 4, generators: 1, warmupS: 1, durationS: 1, sent: 1000, ok: 100, throughput: o.throughput, errors: {}, unanswered: 0,
    latencyMs: lat(o.highP99), histogram: '', timeline: { startAt: 0, measureFrom: 0, measureTo: 1000, bucketMs: 1000, ok: [], errors: [] },
    perNode: {}, forwardedShare: null, meanBatch: null, generator: { cpuPct: 10, loopMaxMs: 1 }, machine: { busyPct: 100, othersPct: 0 },
    server: { pids: [1], cpuSeconds: 1, cpuPct: 100, cpuSecondsToDrainByPid: null, cpuPerRequestUs: 1, eventLoopDelayMaxMs: 12, eventLoopSamples: 2, mainThreads: [{ cpuPct: 39.5, preemptedPerS: 1394 }] },
    byPriority: { high: prio(o.highP99), normal: prio(o.highP99 * 2, 50), low: prio(o.highP99 * 3, 0) },
    ...(o.overloadedP99 !== undefined
      ? { overloaded: { count: 900, latencyMs: lat(o.overloadedP99, 900), histogram: '', missingRetryAfter: 2, reasons: { 'model queue is full (N)': 900 }, retryAfterMs: { min: 5, mean: 20, max: 40 } } }
      : {}),
  };
}

function results(peak: number, unloaded: PhaseResult | null, overload: PhaseResult | null): OverloadResults {
  return {
    model: 'text-orientation', factor: 3, mix: { high: 0.1, normal: 0.6, low: 0.3 }, closedLoop: { throughput: peak, source: 'measured here' },
    closedLoopAfter: peak * 0.9, earlierClosedLoop: peak * 1.5, offeredBasis: peak, openAtPeak: null, peak, peakSource: 'closed loop', unloadedPct: 10, unloaded, overload, targets: overloadTargets(peak, unloaded, overload),
    rssMiB: { before: 200, max: 300, after: 250 }, after: { sent: 9, ok: 9, errors: {} },
  };
}

describe('overloadTargets', () => {
  const unloaded = phase({ throughput: 10, highP99: 10 });

  it('meets every target when goodput is at least 90% of peak, refusals come within 5 ms and high p99 stays under 3× unloaded', () => {
    const t = overloadTargets(100, unloaded, phase({ throughput: 90, highP99: 29, overloadedP99: 4.9 }));
    expect(t.goodputVsPeak).toEqual({ value: 0.9, min: 0.9, met: true });
    expect(t.overloadedP99Ms).toEqual({ value: 4.9, max: 5, met: true });
    expect(t.highP99VsUnloaded).toEqual({ value: 2.9, max: 3, met: true });
  });

  it('misses each target on the wrong side of its bound, the bounds of "under" included', () => {
    const t = overloadTargets(100, unloaded, phase({ throughput: 89, highP99: 30, overloadedP99: 5 }));
    expect(t.goodputVsPeak.met).toBe(false);
    expect(t.overloadedP99Ms.met).toBe(false);
    expect(t.highP99VsUnloaded.met).toBe(false);
  });

  it('leaves a target unmeasured (null) when its figures are missing: no refusals, no unloaded reference, no phase', () => {
    const noRefusals = overloadTargets(100, null, phase({ throughput: 95, highP99: 20 }));
    expect(noRefusals.goodputVsPeak.met).toBe(true);
    expect(noRefusals.overloadedP99Ms).toEqual({ value: null, max: 5, met: null });
    expect(noRefusals.highP99VsUnloaded).toEqual({ value: null, max: 3, met: null });
    const none = overloadTargets(100, unloaded, null);
    expect([none.goodputVsPeak.met, none.overloadedP99Ms.met, none.highP99VsUnloaded.met]).toEqual([null, null, null]);
  });
});

describe('rerunBasis', () => {
  it('runs the overload again from the closed loop after it only when that ran over `above` × the basis the rate was set from', () => {
    expect(rerunBasis(100, 111, 1.1)).toBe(111);
    expect(rerunBasis(100, 110, 1.1)).toBeNull();
    expect(rerunBasis(100, 95, 1.1)).toBeNull();
    expect(rerunBasis(100, null, 1.1)).toBeNull();
    expect(rerunBasis(100, 95, 0)).toBe(95);
  });
});

describe('renderOverload', () => {
  const targetRows = (md: string) => md.split('\n').filter((l) => /^\| (goodput ÷ peak|p99 time to an `overloaded` answer|high-priority p99 under overload ÷ unloaded) \|/.test(l));

  it('prints a titled section with one row per target, each with its bound and met ✅', () => {
    const md = renderOverload(results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 2 }))).join('\n');
    expect(md).toMatch(/^## Overload \(text-orientation, 3× peak\)$/m);
    expect(md).toMatch(/^\| target \| value \| bound \|$/m);
    const rows = targetRows(md);
    expect(rows).toHaveLength(3);
    expect(rows[0]).toMatch(/\| 95\.0% \(95 \/s of 100\) \| at least 90%: met ✅ \|$/);
    expect(rows[1]).toMatch(/\| 2\.00 ms \(900 answers\) \| under 5 ms: met ✅ \|$/);
    expect(rows[2]).toMatch(/\| 2× \(20\.00 ms ÷ 10\.00 ms\) \| under 3×: met ✅ \|$/);
  });

  it('marks missed targets ❌ and unmeasured ones "(not measured)", and prints the detail rows', () => {
    const md = renderOverload(results(100, null, phase({ throughput: 20, highP99: 200 }))).join('\n');
    const rows = targetRows(md);
    expect(rows[0]).toMatch(/at least 90%: missed ❌ \|$/);
    expect(rows[1]).toMatch(/under 5 ms \(not measured\) \|$/);
    expect(rows[2]).toMatch(/under 3× \(not measured\) \|$/);
    expect(md).toMatch(/^\| high-priority requests that succeeded under overload \| 100% \(100 of 100\) \|$/m);
    expect(md).toMatch(/^\| node RSS before \/ max during \/ after the overload \| 200 \/ 300 \/ 250 MiB \|$/m);
    expect(md).toMatch(/^\| requests after the overload \(fresh connection, every priority\) \| 9 of 9 ok, failed: none \|$/m);
    expect(md).toMatch(/^\| 3× peak \| low \| 100 \| 0 \| 0% \|.*\| overloaded 100 \|$/m);
  });

  it('names the closed loops that bracket the overload, which one is the peak, and the earlier phase for reference', () => {
    const r = results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 2 }));
    r.closedLoopAfter = 120;
    r.peak = 120;
    r.peakSource = 'closed loop after';
    const md = renderOverload(r).join('\n');
    expect(md).toContain('Peak 120 req/s = the closed loop after: the highest of its closed-loop throughput just before the overload, 100 req/s, the same just after it, 120 req/s,');
    expect(md).toContain('offered loads are shares of the higher of the two before it, 100 req/s. (The run\'s closed-loop phase of text-orientation, another node minutes earlier: 150 req/s.)');
  });

  it('says when the overload was run again from the closed loop after a first try, and prints the first try', () => {
    const r = results(130, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 117, highP99: 20, overloadedP99: 2, offered: 390 }));
    r.closedLoop = { throughput: 100, source: 'measured here' };
    r.firstTry = { rerunAbove: 1.1, offeredBasis: 100, overload: phase({ throughput: 96, highP99: 20, overloadedP99: 6.5, offered: 300 }), closedLoopAfter: 130 };
    r.offeredBasis = 130;
    r.closedLoopAfter = 125;
    r.peakSource = 'closed loop after';
    const md = renderOverload(r).join('\n');
    expect(md).toContain('offered loads are shares of the higher of the two before it, 100 req/s; the closed loop after a first try at 3× that ran 130 req/s, ' +
      'over 1.1× it, so the overload and the closed loop after it were run again at 3× 130 req/s');
    expect(md).toMatch(/^\| the first try, at 3× 100 req\/s: goodput ÷ peak, p99 time to `overloaded`, the closed loop after it \| 73\.8%, 6\.50 ms, 130 req\/s \|$/m);
    expect(md).toMatch(/^\| offered ÷ peak: the overload as run .*\| 3\.00× \|$/m);
    expect(md).toMatch(/^\| goodput ÷ peak \| 90\.0% \(117 \/s of 130\)/m);
    delete r.firstTry;
    expect(renderOverload(r).join('\n')).not.toMatch(/first try/);
  });

  it('marks a goodput over 100% of peak: the node ran faster under overload than in every loop around it', () => {
    const row = (throughput: number) => renderOverload(results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput, highP99: 20, overloadedP99: 2 })))
      .find((l) => l.startsWith('| goodput ÷ peak |'));
    expect(row(135)).toMatch(/^\| goodput ÷ peak \| 135\.0% \(135 \/s of 100\) ⚠ more than any closed loop around it: this machine's speed changed \| at least 90%: met ✅ \|$/);
    expect(row(100)).not.toContain('⚠');
  });

  it('counts refusals without retryAfterMs and lists the server\'s reasons', () => {
    const md = renderOverload(results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 2 }))).join('\n');
    expect(md).toMatch(/^\| `overloaded` answers without `retryAfterMs` \| 2 of 900 \(given: 5–40 ms, mean 20\) \|$/m);
    expect(md).toMatch(/^\| `overloaded` reasons \(the server's messages\) \| model queue is full \(N\): 900 \|$/m);
  });

  it('prints the refusal floors (idle, and beside a busy thread) next to the node\'s time to `overloaded` when it was measured, and nothing when not', () => {
    const r = results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 30 }));
    const floorRow = /^\| the same, from a server that refuses at once .*\| p50 [0-9.]+, p99 7\.00, max [0-9.]+ ms; 900 answers \|$/m;
    expect(renderOverload(r).join('\n')).not.toMatch(/server that refuses at once/);
    r.refusalFloor = phase({ throughput: 0, highP99: 1, overloadedP99: 7 });
    expect(renderOverload(r).join('\n')).toMatch(floorRow);
    expect(renderOverload(r).join('\n')).not.toMatch(/beside one thread/);
    r.refusalFloorBusy = phase({ throughput: 0, highP99: 1, overloadedP99: 27 });
    const md = renderOverload(r).join('\n');
    expect(md).toMatch(floorRow);
    expect(md).toMatch(/^\| the same server, beside one thread that computes at the inference nice .*\| p50 [0-9.]+, p99 27\.00, max [0-9.]+ ms; 900 answers \|$/m);
  });

  it('prints the event loop\'s CPU and preemptions for the node and each floor, n/a for a phase not measured or without /proc', () => {
    const r = results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 30 }));
    const row = (md: string) => md.split('\n').find((l) => l.startsWith('| event loop (main thread):'));
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| 40%, 1,394\/s; n\/a; n\/a \|$/);
    r.refusalFloor = phase({ throughput: 0, highP99: 1, overloadedP99: 7 });
    r.refusalFloor.server.mainThreads = [{ cpuPct: 24, preemptedPerS: 1611 }];
    r.refusalFloorBusy = phase({ throughput: 0, highP99: 1, overloadedP99: 9 });
    r.refusalFloorBusy.server.mainThreads = null;
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| 40%, 1,394\/s; 24%, 1,611\/s; n\/a \|$/);
  });

  it('prints the overload as run, offered ÷ peak, and marks it when the peak measured after it left it well under the factor asked for', () => {
    const row = (md: string) => md.split('\n').find((l) => l.startsWith('| offered ÷ peak'));
    // The fixture offers 300 req/s: at a peak of 100 that is the 3× asked for.
    expect(row(renderOverload(results(100, null, phase({ throughput: 95, highP99: 20, overloadedP99: 2 }))).join('\n'))).toMatch(/\| 3\.00× \|$/);
    expect(row(renderOverload(results(110, null, phase({ throughput: 95, highP99: 20, overloadedP99: 2 }))).join('\n'))).toMatch(/\| 2\.73× \|$/);
    expect(row(renderOverload(results(125, null, phase({ throughput: 95, highP99: 20, overloadedP99: 2 }))).join('\n'))).toMatch(/\| 2\.40× ⚠ \|$/);
    expect(row(renderOverload(results(100, null, null)).join('\n'))).toMatch(/\| n\/a \|$/);
  });

  it('prints the node\'s busiest other thread at 100% of the closed loop and under overload, with its CPU per result; n/a without the figure', () => {
    const r = results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 30 }));
    const row = (md: string) => md.split('\n').find((l) => l.startsWith('| node: its busiest thread besides the event loop'));
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| n\/a; n\/a \|$/);
    r.openAtPeak = phase({ throughput: 900, highP99: 10 });
    r.openAtPeak.server.mainThreads = [{ cpuPct: 30, preemptedPerS: 1000, busiestOtherPct: 99 }];
    r.overload!.server.mainThreads = [{ cpuPct: 50, preemptedPerS: 1400, busiestOtherPct: 93 }];
    // 0.99 s of CPU a second over 900 results a second is 1.10 ms each; 0.93 s over 95 is 9.79 ms.
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| 99%, 1\.10 ms; 93%, 9\.79 ms \|$/);
  });

  it('prints how late the generator sent under overload and against each floor, n/a for a phase not measured or without the figure', () => {
    const r = results(100, phase({ throughput: 10, highP99: 10 }), phase({ throughput: 95, highP99: 20, overloadedP99: 30 }));
    const row = (md: string) => md.split('\n').find((l) => l.startsWith('| generator: requests sent later than scheduled'));
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| n\/a; n\/a; n\/a \|$/);
    r.overload!.generator.sendLateMs = { ...lat(1.43), p50: 0 };
    r.refusalFloor = phase({ throughput: 0, highP99: 1, overloadedP99: 7 });
    r.refusalFloor.generator.sendLateMs = lat(2.5, 0);
    r.refusalFloorBusy = phase({ throughput: 0, highP99: 1, overloadedP99: 9 });
    r.refusalFloorBusy.generator.sendLateMs = lat(3.1);
    expect(row(renderOverload(r).join('\n'))).toMatch(/\| 0\.00 \/ 1\.43 ms; n\/a; 1\.55 \/ 3\.10 ms \|$/);
  });

  it('prints the node\'s GC pauses in the window, scavenges then full collections, with their share of it; n/a without /metrics', () => {
    const o = phase({ throughput: 95, highP99: 20, overloadedP99: 2 });
    o.durationS = 2;
    o.server.gc = { minor: { count: 38, ms: 36.6 }, incremental: { count: 1, ms: 0.2 } };
    const row = (md: string) => md.split('\n').find((l) => l.startsWith('| node: GC pauses'));
    expect(row(renderOverload(results(100, null, o)).join('\n'))).toMatch(/\| scavenges 38: 36\.6 ms \(1\.8%\); full 0: 0(\.0)? ms \(0(\.0)?%\) \|$/);
    o.server.gc = null;
    expect(row(renderOverload(results(100, null, o)).join('\n'))).toMatch(/\| n\/a \|$/);
    expect(row(renderOverload(results(100, null, null)).join('\n'))).toMatch(/\| n\/a \|$/);
  });

  it('prints the run-up: results in each whole second from the first send to the end of the window, as shares of peak', () => {
    const o = phase({ throughput: 95, highP99: 20, overloadedP99: 2 });
    o.warmupS = 3;
    // 3 s of warm-up and 2 measured, ended a moment early by the bench's stop; the drain's bucket is left out.
    o.timeline = { startAt: 1_000, measureFrom: 4_000, measureTo: 5_998.6, bucketMs: 1000, ok: [56, 74, 88, 91, 93, 40], errors: [] };
    expect(runUp(o, 100)).toBe('56%, 74%, 88%, 91%, 93%');
    const md = renderOverload(results(100, phase({ throughput: 10, highP99: 10 }), o)).join('\n');
    expect(md).toMatch(/^\| results each second from the overload's first send, ÷ peak \(3\.00 s warm-up, then the window\) \| 56%, 74%, 88%, 91%, 93% \|$/m);
    expect(runUp(o, 0), 'no peak, no shares').toBe('n/a');
    o.timeline = { ...o.timeline, ok: [50] };
    expect(runUp(o, 100), 'a second with no results shows 0%').toBe('50%, 0%, 0%, 0%, 0%');
  });
});

describe('median', () => {
  it('is the middle value of an odd count, the mean of the middle two of an even one, null for none; the input is left as it was', () => {
    const xs = [9, 1, 5];
    expect(median(xs)).toBe(5);
    expect(xs).toEqual([9, 1, 5]);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNull();
  });
});

describe('renderOverloadSeries', () => {
  // Peak 100 unless given, unloaded high p99 10 ms: goodput = throughput %, high ratio = highP99 ÷ 10.
  const unloaded = phase({ throughput: 10, highP99: 10 });
  const run = (throughput: number, overloadedP99: number, highP99: number, floors?: [number, number], peak = 100): OverloadResults => {
    const r = results(peak, unloaded, phase({ throughput, highP99, overloadedP99 }));
    if (floors !== undefined) {
      r.refusalFloor = phase({ throughput: 0, highP99: 1, overloadedP99: floors[0] });
      r.refusalFloorBusy = phase({ throughput: 0, highP99: 1, overloadedP99: floors[1] });
    }
    return r;
  };
  const runRows = (md: string) => md.split('\n').filter((l) => /^\| \d+ \|/.test(l));
  const statRow = (md: string, what: string) => md.split('\n').find((l) => l.startsWith(`| ${what}`));

  it('prints one row per run with each target\'s value, its verdict and how many of the three it met', () => {
    const md = renderOverloadSeries([run(95, 4, 20, [1, 2]), run(80, 7, 35)]).join('\n');
    expect(md).toMatch(/^## Overload \(text-orientation, 3× peak\): 2 runs$/m);
    const rows = runRows(md);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toBe('| 1 | 100 | 100 → 90 | 3.00× | 95.0% ✅ | 4.00 ms ✅ | 1.00 ms / 2.00 ms | 2× ✅ | 3 of 3 | n/a → n/a |');
    expect(rows[1]).toBe('| 2 | 100 | 100 → 90 | 3.00× | 80.0% ❌ | 7.00 ms ❌ | n/a / n/a | 3.5× ❌ | 0 of 3 | n/a → n/a |');
  });

  it('gives each target\'s median, range and count of runs that met it, and the runs that met all three', () => {
    const md = renderOverloadSeries([run(95, 4, 20, [1, 2]), run(80, 7, 35, [3, 6]), run(91, 6, 25, [2, 4]), run(92, 3, 29, [1, 3])]).join('\n');
    expect(md).toMatch(/^\| over the 4 runs that completed \| median \| range \| met \|$/m);
    expect(statRow(md, 'goodput ÷ peak')).toBe('| goodput ÷ peak (at least 90%) | 91.5% | 80.0% – 95.0% | 3 of 4 |');
    expect(statRow(md, 'p99 time to an `overloaded` answer')).toBe('| p99 time to an `overloaded` answer (under 5 ms) | 5.00 ms | 3.00 ms – 7.00 ms | 2 of 4 |');
    expect(statRow(md, 'high-priority p99')).toBe('| high-priority p99 under overload ÷ unloaded (under 3×) | 2.7× | 2× – 3.5× | 3 of 4 |');
    expect(statRow(md, 'all three')).toBe('| all three | | | 2 of 4 |');
    expect(statRow(md, 'refusal floor p99, idle')).toBe('| refusal floor p99, idle | 1.50 ms | 1.00 ms – 3.00 ms |  |');
    expect(statRow(md, 'refusal floor p99, beside')).toBe('| refusal floor p99, beside a busy thread | 3.50 ms | 2.00 ms – 6.00 ms |  |');
    expect(md).toContain('Runs marked ⚠: 0 of 4, counted above like the others.');
  });

  it('prints the closed loops before and after the overload, and after a first try between them when it ran again', () => {
    const r = run(80, 4, 20);
    r.closedLoopAfter = 640;
    r.firstTry = { rerunAbove: 1.1, offeredBasis: 100, overload: phase({ throughput: 70, highP99: 20, overloadedP99: 6 }), closedLoopAfter: 862 };
    expect(runRows(renderOverloadSeries([r, run(95, 4, 20)]).join('\n'))[0]).toMatch(/^\| 1 \| 100 \| 100 → 862 → 640 \| /);
  });

  it('prints the inference thread\'s CPU per result at 100% of the closed loop and under overload', () => {
    const r = run(80, 4, 20);
    r.openAtPeak = phase({ throughput: 900, highP99: 10 });
    r.openAtPeak.server.mainThreads = [{ cpuPct: 30, preemptedPerS: 1000, busiestOtherPct: 99 }];
    r.overload!.server.mainThreads = [{ cpuPct: 50, preemptedPerS: 1400, busiestOtherPct: 96 }];
    // 0.99 s of CPU a second over 900 results is 1.10 ms each; 0.96 s over 80 is 12.00 ms.
    expect(runRows(renderOverloadSeries([r, run(95, 4, 20)]).join('\n'))[0]).toMatch(/\| 1\.10 ms → 12\.00 ms \|$/);
  });

  it('lists a failed run, leaves it out of the medians and counts, and says so', () => {
    const md = renderOverloadSeries([run(95, 4, 20), null, run(85, 6, 20)]).join('\n');
    expect(md).toMatch(/^## Overload \(text-orientation, 3× peak\): 3 runs$/m);
    expect(runRows(md)[1]).toBe('| 2 | failed (see Errors) | | | | | | | | |');
    expect(statRow(md, 'goodput ÷ peak')).toBe('| goodput ÷ peak (at least 90%) | 90.0% | 85.0% – 95.0% | 1 of 2 |');
    expect(md).toContain('Runs that failed: 1 (see Errors), left out.');
  });

  it('marks a run offered well under the factor or with goodput over 100%, and counts the marked runs', () => {
    const underOffered = run(95, 4, 20, undefined, 125); // 300 req/s offered against a peak of 125: 2.40× as run
    const md = renderOverloadSeries([underOffered, run(135, 4, 20), run(95, 4, 20)]).join('\n');
    const rows = runRows(md);
    expect(rows[0]).toMatch(/^\| 1 \| 125 \| 125 → 113 \| 2\.40× ⚠ \| 76\.0% ❌ \|/);
    expect(rows[1]).toMatch(/^\| 2 \| 100 \| 100 → 90 \| 3\.00× \| 135\.0% ⚠ ✅ \|/);
    expect(rows[2]).not.toContain('⚠');
    expect(md).toContain('Runs marked ⚠: 2 of 3, counted above like the others.');
  });

  it('comes before run 1 in full in summary.md when the bench ran the phase more than once, and not with one run', () => {
    const bench = (overloadRepeats?: (OverloadResults | null)[]): BenchResults => ({
      schema: 'actorserve-bench/1', startedAt: '', finishedAt: '', commandLine: 'x', options: {},
      machine: { node: 'v20', platform: 'linux', arch: 'x64', cpuModel: 'cpu', cpus: 2, totalMemGiB: 1, loadAverageAtStart: [], loadAverageAtEnd: [], onnxruntime: '1' },
      models: [], cluster: null, overload: run(95, 4, 20), ...(overloadRepeats === undefined ? {} : { overloadRepeats }), processes: [], errors: [],
    });
    const several = renderSummary(bench([run(80, 7, 35)]));
    const series = several.indexOf('## Overload (text-orientation, 3× peak): 2 runs');
    const full = several.indexOf('## Overload (text-orientation, 3× peak): run 1 of 2, in full');
    expect(series).toBeGreaterThan(-1);
    expect(full).toBeGreaterThan(series);
    const one = renderSummary(bench());
    expect(one).toMatch(/^## Overload \(text-orientation, 3× peak\)$/m);
    expect(one).not.toMatch(/runs$|in full/m);
  });
});
