/**
 * Reading a node's /metrics in the chaos suite (cluster/chaos/metricsText.ts).
 */
import { describe, expect, it } from 'vitest';
import { counterValue, histogramDelta, histogramOf, histogramQuantileBound, parseMetrics } from '../../cluster/chaos/metricsText.js';

const scrape = (bucket: number[], sum: number) => `
# HELP actorserve_crash_rerun_seconds Time from a worker crash until the requests of its batch run again.
# TYPE actorserve_crash_rerun_seconds histogram
actorserve_crash_rerun_seconds_bucket{le="0.1",model="iris",node="a"} ${bucket[0]}
actorserve_crash_rerun_seconds_bucket{le="0.5",model="iris",node="a"} ${bucket[1]}
actorserve_crash_rerun_seconds_bucket{le="+Inf",model="iris",node="a"} ${bucket[2]}
actorserve_crash_rerun_seconds_sum{model="iris",node="a"} ${sum}
actorserve_crash_rerun_seconds_count{model="iris",node="a"} ${bucket[2]}
actorserve_duplicate_replies_total{node="a"} 7
actorserve_requests_total{model="iris",version="1",code="ok",node="a"} 10
actorserve_requests_total{model="iris",version="1",code="internal",node="a"} 2
`;

describe('parseMetrics', () => {
  it('reads samples with their labels and skips comments', () => {
    const s = parseMetrics(scrape([1, 2, 3], 0.6));
    expect(s.find((x) => x.name === 'actorserve_duplicate_replies_total')).toEqual({ name: 'actorserve_duplicate_replies_total', labels: { node: 'a' }, value: 7 });
    expect(s.every((x) => !x.name.startsWith('#'))).toBe(true);
  });

  it('sums a counter over the series matching a label filter', () => {
    const s = parseMetrics(scrape([1, 2, 3], 0.6));
    expect(counterValue(s, 'actorserve_requests_total')).toBe(12);
    expect(counterValue(s, 'actorserve_requests_total', { code: 'ok' })).toBe(10);
    expect(counterValue(s, 'actorserve_missing')).toBe(0);
  });

  it('reads a label value with escaped quotes', () => {
    expect(parseMetrics('m{a="x\\"y"} 1')[0]!.labels).toEqual({ a: 'x"y' });
  });
});

describe('histograms', () => {
  it('reads cumulative buckets, sum and count, and subtracts an earlier scrape', () => {
    const before = histogramOf(parseMetrics(scrape([1, 1, 1], 0.05)), 'actorserve_crash_rerun_seconds');
    const after = histogramOf(parseMetrics(scrape([2, 4, 5], 1.25)), 'actorserve_crash_rerun_seconds');
    expect(after.buckets).toEqual([{ le: 0.1, count: 2 }, { le: 0.5, count: 4 }, { le: Infinity, count: 5 }]);
    const d = histogramDelta(after, before);
    expect(d).toEqual({ buckets: [{ le: 0.1, count: 1 }, { le: 0.5, count: 3 }, { le: Infinity, count: 4 }], sum: 1.2, count: 4 });
  });

  it('bounds a quantile by the upper edge of the bucket that holds it', () => {
    const h = histogramOf(parseMetrics(scrape([2, 4, 5], 1.25)), 'actorserve_crash_rerun_seconds');
    expect(histogramQuantileBound(h, 0.4)).toBe(0.1);
    expect(histogramQuantileBound(h, 0.5)).toBe(0.5);
    expect(histogramQuantileBound(h, 1)).toBe(Infinity);
    expect(histogramQuantileBound({ buckets: [], sum: 0, count: 0 }, 0.5)).toBeUndefined();
  });
});
