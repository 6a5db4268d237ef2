import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RunWatchdog } from '../../src/actors/RunWatchdog.js';

describe('RunWatchdog', () => {
  // The interval is faked; the clock it reads is this variable, moved by `pass` (the process runs) or `stall` (it does not).
  let clock = 0;
  const now = () => clock;
  /** The process runs for `ms`: the clock and the timers move together. */
  const pass = (ms: number) => {
    for (let i = 0; i < ms; i++) {
      clock += 1;
      vi.advanceTimersByTime(1);
    }
  };
  /** The whole process is stopped for `ms` (SIGSTOP, a paused VM): the clock moves, no timer runs until it resumes. */
  const stall = (ms: number) => {
    clock += ms;
  };
  /** A watchdog with a 100 ms limit checked every 10 ms, armed for one run. */
  const armed = () => {
    const dog = new RunWatchdog({ limitMs: 100, periodMs: 10, now });
    const expired = vi.fn();
    dog.arm(expired);
    return { dog, expired };
  };

  beforeEach(() => {
    clock = 0;
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fires once a run has had its limit, within one period after it', () => {
    const { expired } = armed();
    pass(99);
    expect(expired).not.toHaveBeenCalled();
    pass(11);
    expect(expired).toHaveBeenCalledTimes(1);
    pass(500);
    expect(expired, 'fires once per arm').toHaveBeenCalledTimes(1);
  });

  it('gives each run a full limit: arming again restarts the count, disarming stops it', () => {
    const { dog, expired } = armed();
    pass(80);
    dog.arm(expired);
    pass(80);
    expect(expired).not.toHaveBeenCalled();
    dog.disarm();
    pass(1_000);
    expect(expired).not.toHaveBeenCalled();
    expect(vi.getTimerCount(), 'the interval stops itself once disarmed').toBe(0);
  });

  it('does not count a stall of the whole process against the run: a node stopped for 10× the limit keeps its worker', () => {
    const { expired } = armed();
    pass(50);
    stall(1_000);
    pass(10);
    expect(expired).not.toHaveBeenCalled();
    // The run is still going after the resume: it is a hang after all, and is caught once it has had its time.
    pass(40);
    expect(expired).toHaveBeenCalledTimes(1);
  });

  it('calls the callback of the latest arm, so a late expiry never reaches a thread that replaced the hung one', () => {
    const dog = new RunWatchdog({ limitMs: 100, periodMs: 10, now });
    const first = vi.fn();
    const second = vi.fn();
    dog.arm(first);
    pass(50);
    dog.arm(second);
    pass(120);
    expect(first).not.toHaveBeenCalled();
    expect(second).toHaveBeenCalledTimes(1);
  });
});
