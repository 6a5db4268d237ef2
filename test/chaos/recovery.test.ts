/**
 * The chaos suite's recovery measure (cluster/chaos/recovery.ts) on
 * synthetic throughput series.
 */
import { describe, expect, it } from 'vitest';
import { bucketize, quantile, ratePerSec, recoveryMs, smooth, type Series } from '../../cluster/chaos/recovery.js';

/** A series from per-bucket counts, t0 = 0, 100 ms buckets. */
const series = (counts: number[]): Series => ({ t0: 0, bucketMs: 100, counts });
const steady = (n: number, v = 80) => new Array<number>(n).fill(v);
/** 2 s of baseline, the fault at 2 000 ms, then `after`. */
const around = (after: number[]) => series([...steady(20), ...after]);
const opts = (len: number) => ({ baselineFrom: 0, faultAt: 2_000, eventAt: 2_000, segmentEnd: 2_000 + len * 100 });

describe('bucketize and ratePerSec', () => {
  it('counts arrival times into 100 ms buckets from t0 and ignores times outside', () => {
    const s = bucketize([1_000, 1_050, 1_150, 1_299, 999, 1_300], 1_000, 1_300);
    expect(s.counts).toEqual([2, 1, 1]);
  });

  it('gives the mean per-second rate over the buckets wholly inside the window', () => {
    const s = series([10, 20, 30, 40]);
    expect(ratePerSec(s, 0, 400)).toBe(250);
    expect(ratePerSec(s, 50, 400)).toBe(300); // bucket 0 is only partly inside
    expect(ratePerSec(s, 400, 500)).toBe(0);
  });

  it('smooths with a centred median, narrower at the edges', () => {
    expect(smooth([0, 10, 20, 30, 40], 3)).toEqual([10, 10, 20, 30, 40]);
    expect(smooth([80, 80, 0, 160, 80, 80], 5)).toEqual([80, 80, 80, 80, 80, 80]);
  });
});

describe('recoveryMs', () => {
  it('is 0 when throughput never dips below 90 % of the baseline', () => {
    const after = [78, 82, 75, 85, 80, 79, 81, 80, 80, 80, 80, 80];
    expect(recoveryMs(around(after), opts(after.length))).toBe(0);
  });

  it('measures from the fault to the start of a sustained return above 90 %', () => {
    // Stalled for 1 s right after the fault, then back: the median of 0,0,80,80,80 is back at the first full bucket.
    const after = [...steady(10, 0), ...steady(20)];
    expect(recoveryMs(around(after), opts(after.length))).toBe(1_000);
  });

  it('takes a single stalled bucket followed by its catch-up for noise, not an outage', () => {
    const after = [80, 80, 80, 0, 160, 80, 80, 80, 35, 125, 80, 80, 80, 80];
    expect(recoveryMs(around(after), opts(after.length))).toBe(0);
  });

  it('sees a partial slowdown below 90 % as an outage', () => {
    const after = [...steady(15, 60), ...steady(15)];
    expect(recoveryMs(around(after), opts(after.length))).toBe(1_500);
  });

  it('is null when throughput is still low at the end of the segment', () => {
    const after = [...steady(10, 0), ...steady(10, 40)];
    expect(recoveryMs(around(after), opts(after.length))).toBeNull();
  });

  it('does not count a return that lasts less than 500 ms as recovery', () => {
    const after = [...steady(8, 0), ...steady(4, 80), ...steady(8, 0), ...steady(20)];
    expect(recoveryMs(around(after), opts(after.length))).toBe(2_000);
  });

  it('ignores a dip that starts more than 2 s after the event (that is not this fault)', () => {
    const after = [...steady(25), ...steady(5, 0), ...steady(10)];
    expect(recoveryMs(around(after), opts(after.length))).toBe(0);
  });

  it('measures from a later event (a heal) against the pre-fault baseline', () => {
    const s = series([...steady(20), ...steady(50, 200), ...steady(5, 0), ...steady(20)]);
    expect(recoveryMs(s, { baselineFrom: 0, faultAt: 2_000, eventAt: 7_000, segmentEnd: 9_500 })).toBe(500);
  });

  it('is null without a baseline (nothing before the fault)', () => {
    expect(recoveryMs(series([0, 0, 0, 80, 80]), { baselineFrom: 0, faultAt: 300, eventAt: 300, segmentEnd: 500 })).toBeNull();
  });
});

describe('quantile', () => {
  it('takes the nearest rank, and undefined for no values', () => {
    expect(quantile([5, 1, 3], 0.5)).toBe(3);
    expect(quantile([1, 2, 3, 4], 0.5)).toBe(2);
    expect(quantile([1, 2, 3, 4], 1)).toBe(4);
    expect(quantile([], 0.5)).toBeUndefined();
  });
});
