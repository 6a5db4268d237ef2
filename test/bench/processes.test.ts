/**
 * The bench's /proc probes of a server's main thread: what one sample reads,
 * and the per-second figures two samples make.
 */
import { describe, expect, it } from 'vitest';
import { gcBetween, mainThreads, parseGcTotals } from '../../bench/loadPhase.js';
import { mainThreadSample } from '../../bench/processes.js';

describe('mainThreadSample', () => {
  it('reads this process\'s main thread: its CPU grows with work on it, its preemptions are a count that never falls', () => {
    const a = mainThreadSample(process.pid)!;
    expect(a).toBeDefined();
    const until = performance.now() + 200;
    while (performance.now() < until); // busy on this thread, not asleep
    const b = mainThreadSample(process.pid)!;
    // /proc counts in ticks of 10 ms; 200 ms of work on this thread is at least a few of them, however the machine is shared.
    expect(b.cpuSeconds - a.cpuSeconds).toBeGreaterThanOrEqual(0.05);
    expect(Number.isInteger(a.preempted) && a.preempted >= 0).toBe(true);
    expect(b.preempted).toBeGreaterThanOrEqual(a.preempted);
  });

  it('is undefined for a process that is not there', () => {
    expect(mainThreadSample(2 ** 22 + 1)).toBeUndefined(); // above Linux's largest pid
  });
});

describe('mainThreads', () => {
  const s = (cpuSeconds: number, preempted: number, others: [number, number][] = []) => ({ cpuSeconds, preempted, others: new Map(others) });

  it('gives each server\'s CPU % of a core and preemptions a second over the window, in pid order', () => {
    expect(mainThreads([s(1, 100), s(5, 0)], [s(1.8, 2_900), s(5.5, 1_000)], 2)).toEqual([
      { cpuPct: 40, preemptedPerS: 1_400 },
      { cpuPct: 25, preemptedPerS: 500 },
    ]);
  });

  it('gives the CPU % of the busiest other thread, counting only threads alive at both ends of the window', () => {
    const from = s(1, 0, [[11, 5], [12, 0.2], [13, 9]]);
    // 11 ran 0.9 s, 12 ran 1.6 s; 13 ended and 14 started inside the window, so neither has a figure for all of it.
    const to = s(2, 0, [[11, 5.9], [12, 1.8], [14, 3]]);
    expect(mainThreads([from], [to], 2)).toEqual([{ cpuPct: 50, preemptedPerS: 0, busiestOtherPct: 80 }]);
    expect(mainThreads([s(1, 0)], [s(2, 0)], 2), 'a process of one thread').toEqual([{ cpuPct: 50, preemptedPerS: 0 }]);
  });

  it('is null when a sample is missing or the window is empty, never a figure made of half the data', () => {
    expect(mainThreads([s(1, 1), undefined], [s(2, 2), s(2, 2)], 1)).toBeNull();
    expect(mainThreads([s(1, 1)], [undefined], 1)).toBeNull();
    expect(mainThreads([s(1, 1)], [], 1)).toBeNull();
    expect(mainThreads([], [], 1)).toBeNull();
    expect(mainThreads([s(1, 1)], [s(2, 2)], 0)).toBeNull();
  });
});

describe('GC pauses from /metrics', () => {
  const page = (minor: [number, number], major: [number, number]) => [
    '# HELP nodejs_gc_duration_seconds Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
    '# TYPE nodejs_gc_duration_seconds histogram',
    `nodejs_gc_duration_seconds_bucket{le="0.001",node="n1",kind="minor"} ${minor[0]}`,
    `nodejs_gc_duration_seconds_sum{node="n1",kind="minor"} ${minor[1]}`,
    `nodejs_gc_duration_seconds_count{node="n1",kind="minor"} ${minor[0]}`,
    `nodejs_gc_duration_seconds_sum{node="n1",kind="major"} ${major[1]}`,
    `nodejs_gc_duration_seconds_count{node="n1",kind="major"} ${major[0]}`,
  ].join('\n');

  it('reads the count and seconds of each kind, not the buckets', () => {
    expect(parseGcTotals(page([10, 0.012], [2, 0.03]))).toEqual({ minor: { count: 10, seconds: 0.012 }, major: { count: 2, seconds: 0.03 } });
    expect(parseGcTotals('nodejs_eventloop_lag_max_seconds 0.01')).toEqual({});
  });

  it('gives the pauses between two scrapes per kind, summed over servers', () => {
    expect(gcBetween([page([10, 0.012], [2, 0.03]), page([0, 0], [0, 0])], [page([50, 0.052], [3, 0.04]), page([5, 0.004], [0, 0])]))
      .toEqual({ minor: { count: 45, ms: 44 }, major: { count: 1, ms: 10 } });
  });

  it('is null when a scrape is missing, never a figure made of half the data', () => {
    expect(gcBetween([page([1, 0.1], [0, 0])], [undefined])).toBeNull();
    expect(gcBetween([undefined], [page([1, 0.1], [0, 0])])).toBeNull();
    expect(gcBetween([], [])).toBeNull();
  });
});
