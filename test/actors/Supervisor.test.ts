import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkSupervisorSpec,
  childStates,
  initialSupervisorState,
  restartCounts,
  restartsInWindow,
  supervisorTransition,
  type ChildState,
  type ExitReason,
  type RestartType,
  type Strategy,
  type SupervisorEffect,
  type SupervisorMsg,
  type SupervisorSpec,
  type SupervisorState,
} from '../../src/actors/Supervisor.js';

type Effect = SupervisorEffect;
type Msg = SupervisorMsg;

// ---------------------------------------------------------------------------
// The reference: OTP's supervisor written as plainly as possible. It keeps
// every restart time ever made and counts the window by filtering, so it
// shares no pruning logic with the module under test.
// ---------------------------------------------------------------------------

interface RefChild {
  id: string;
  restart: RestartType;
  state: ChildState;
  gen: number;
  restarts: number;
  dueAt: number;
}

interface Flags {
  strategy: Strategy;
  intensity: number;
  periodMs: number;
  initialMs: number;
  maxMs: number;
  factor: number;
}

class ReferenceSupervisor {
  phase: 'idle' | 'running' | 'over' = 'idle';
  readonly children: RefChild[];
  readonly restartLog: number[] = [];

  constructor(readonly flags: Flags, restarts: readonly RestartType[]) {
    this.children = restarts.map((restart, i) => ({ id: `c${i}`, restart, state: 'stopped', gen: 0, restarts: 0, dueAt: 0 }));
  }

  apply(msg: Msg, now: number): Effect[] {
    if (this.phase === 'over') return [];
    if (msg.t === 'start') {
      if (this.phase !== 'idle') return [];
      this.phase = 'running';
      return this.children.map((c) => this.startIt(c, false));
    }
    if (msg.t === 'stop') {
      const fx = this.stopAllRightToLeft();
      this.phase = 'over';
      return fx;
    }
    if (this.phase !== 'running') return [];
    if (msg.t === 'started') {
      const c = this.child(msg.child);
      if (c.state === 'starting' && (msg.gen === undefined || msg.gen === c.gen)) c.state = 'running';
      return [];
    }
    if (msg.t === 'timer') {
      const fx = this.children.filter((c) => c.state === 'restarting' && c.dueAt <= now).map((c) => this.startIt(c, true));
      const waiting = this.children.filter((c) => c.state === 'restarting').map((c) => c.dueAt);
      if (waiting.length > 0) fx.push({ t: 'schedule', atMs: Math.min(...waiting) });
      return fx;
    }
    // exit
    const c = this.child(msg.child);
    const live = c.state === 'starting' || c.state === 'running';
    if (!live || (msg.gen !== undefined && msg.gen !== c.gen)) return [];
    const restarts = c.restart === 'permanent' || (c.restart === 'transient' && msg.reason === 'crash');
    if (!restarts) {
      c.state = 'removed';
      return [{ t: 'removeChild', id: c.id }];
    }
    c.state = 'stopped';
    this.restartLog.push(now);
    const k = this.restartLog.filter((t) => now - t <= this.flags.periodMs).length;
    if (k > this.flags.intensity) {
      const fx = this.stopAllRightToLeft();
      this.phase = 'over';
      return [...fx, { t: 'escalate', reason: 'reached_max_restart_intensity', child: c.id, exit: msg.reason }];
    }
    const at = this.children.indexOf(c);
    const group = this.children.filter(
      (x, j) =>
        x.state !== 'removed' &&
        (x === c || this.flags.strategy === 'one_for_all' || (this.flags.strategy === 'rest_for_one' && j > at)),
    );
    const fx: Effect[] = [];
    for (const x of [...group].reverse()) {
      if (x === c) continue;
      if (x.state === 'starting' || x.state === 'running') fx.push({ t: 'stopChild', id: x.id });
      if (x.restart === 'temporary') {
        x.state = 'removed';
        fx.push({ t: 'removeChild', id: x.id });
      } else {
        x.state = 'stopped';
      }
    }
    const again = group.filter((x) => x.state !== 'removed');
    const delay = Math.min(this.flags.maxMs, this.flags.initialMs * this.flags.factor ** (k - 1));
    if (delay === 0) return [...fx, ...again.map((x) => this.startIt(x, true))];
    for (const x of again) {
      x.state = 'restarting';
      x.dueAt = now + delay;
    }
    return [...fx, { t: 'schedule', atMs: now + delay }];
  }

  states(): Record<string, ChildState> {
    return Object.fromEntries(this.children.map((c) => [c.id, c.state]));
  }

  counts(): Record<string, number> {
    return Object.fromEntries(this.children.map((c) => [c.id, c.restarts]));
  }

  private child(id: string): RefChild {
    return this.children.find((c) => c.id === id)!;
  }

  private startIt(c: RefChild, again: boolean): Effect {
    c.gen += 1;
    if (again) c.restarts += 1;
    c.state = 'starting';
    return { t: 'startChild', id: c.id, gen: c.gen };
  }

  private stopAllRightToLeft(): Effect[] {
    const fx: Effect[] = [];
    for (const c of [...this.children].reverse()) {
      if (c.state === 'removed') continue;
      if (c.state === 'starting' || c.state === 'running') fx.push({ t: 'stopChild', id: c.id });
      c.state = 'stopped';
    }
    return fx;
  }
}

// ---------------------------------------------------------------------------
// The system under test, plus a world that learns what is alive only from
// the effects it is handed and the exits it delivers. Its bookkeeping never
// throws: a broken supervisor shows up as the failure of the invariant it
// breaks.
// ---------------------------------------------------------------------------

interface Case {
  flags: Flags;
  restarts: RestartType[];
}

function specOf(c: Case): SupervisorSpec {
  const { strategy, intensity, periodMs, initialMs, maxMs, factor } = c.flags;
  return {
    strategy,
    intensity,
    periodMs,
    ...(maxMs > 0 ? { backoff: { initialMs, maxMs, factor } } : {}),
    children: c.restarts.map((restart, i) => ({ id: `c${i}`, restart })),
  };
}

interface Snapshot {
  states: Record<string, ChildState>;
  counts: Record<string, number>;
  phase: string;
}

interface Step {
  readonly msg: Msg;
  readonly now: number;
  readonly fx: readonly Effect[];
  readonly expectedFx: readonly Effect[];
  readonly before: Snapshot;
  readonly after: Snapshot;
  readonly model: ReferenceSupervisor;
  /** Was the supervisor stopped or escalated before this step? */
  readonly overBefore: boolean;
  readonly aliveBefore: ReadonlySet<string>;
  readonly removedBefore: ReadonlySet<string>;
  /** An exit of the child's current, live incarnation (not one the supervisor stopped). */
  readonly liveExit: boolean;
  /** That exit calls for a restart by the child's restart type. */
  readonly restartWorthy: boolean;
  /** Restart-worthy exits the world delivered within [now − periodMs, now], this one included. */
  readonly inWindow: number;
  /** Children started while the world still had them alive. */
  readonly doubleStarts: readonly string[];
  /** Children started after the supervisor removed them. */
  readonly startsOfRemoved: readonly string[];
}

interface Invariant {
  afterStep?(w: World, step: Step): void;
  atEnd?(w: World): void;
}

const snap = (s: SupervisorState): Snapshot => ({ states: childStates(s), counts: restartCounts(s), phase: s.phase });
const ids = (fx: readonly Effect[], t: 'startChild' | 'stopChild' | 'removeChild'): string[] =>
  fx.flatMap((e) => (e.t === t ? [e.id] : []));
const index = (id: string): number => Number(id.slice(1));

class World {
  now = 0;
  readonly s: SupervisorState;
  readonly ids: string[];
  readonly alive = new Set<string>();
  readonly removed = new Set<string>();
  readonly gens = new Map<string, number>();
  /** When each child's pending restart is due, as the schedule that made it restarting said. */
  readonly dueAt = new Map<string, number>();
  timers: number[] = [];
  readonly restartExits: number[] = [];
  over = false;
  readonly log: string[] = [];

  constructor(
    readonly c: Case,
    readonly invariant: Invariant,
  ) {
    this.s = initialSupervisorState(specOf(c));
    this.ids = c.restarts.map((_, i) => `c${i}`);
  }

  id(i: number): string {
    return this.ids[i % this.ids.length]!;
  }

  send(model: ReferenceSupervisor, msg: Msg): Effect[] {
    const before = snap(this.s);
    const aliveBefore = new Set(this.alive);
    const removedBefore = new Set(this.removed);
    const overBefore = this.over;
    let liveExit = false;
    let restartWorthy = false;
    if (msg.t === 'exit' && !this.over && this.alive.has(msg.child) && (msg.gen === undefined || msg.gen === this.gens.get(msg.child))) {
      liveExit = true;
      const type = this.c.restarts[index(msg.child)]!;
      restartWorthy = type === 'permanent' || (type === 'transient' && msg.reason === 'crash');
      this.alive.delete(msg.child);
      if (restartWorthy) this.restartExits.push(this.now);
    }
    const inWindow = this.restartExits.filter((t) => this.now - t <= this.c.flags.periodMs).length;

    const fx = supervisorTransition(this.s, msg, this.now);
    const expectedFx = model.apply(msg, this.now);
    this.log.push(`${this.now}: ${JSON.stringify(msg)} -> ${JSON.stringify(fx)}`);

    const doubleStarts: string[] = [];
    const startsOfRemoved: string[] = [];
    for (const e of fx) {
      switch (e.t) {
        case 'startChild':
          if (this.alive.has(e.id)) doubleStarts.push(e.id);
          if (this.removed.has(e.id)) startsOfRemoved.push(e.id);
          this.alive.add(e.id);
          this.gens.set(e.id, e.gen);
          this.dueAt.delete(e.id);
          break;
        case 'stopChild':
          this.alive.delete(e.id);
          break;
        case 'removeChild':
          this.removed.add(e.id);
          break;
        case 'schedule':
          this.timers.push(e.atMs);
          break;
        case 'escalate':
          this.over = true;
          break;
      }
    }
    if (msg.t === 'stop') this.over = true;
    const after = snap(this.s);
    const schedule = fx.find((e) => e.t === 'schedule');
    if (msg.t === 'exit' && schedule) {
      // The restart's group takes the new time; a restarting child outside it keeps its own.
      const at = index(msg.child);
      const { strategy } = this.c.flags;
      for (const id of this.ids) {
        const inGroup = id === msg.child || strategy === 'one_for_all' || (strategy === 'rest_for_one' && index(id) > at);
        if (inGroup && after.states[id] === 'restarting') this.dueAt.set(id, schedule.atMs);
      }
    }
    const step: Step = {
      msg, now: this.now, fx, expectedFx, before, after, model, overBefore, aliveBefore, removedBefore,
      liveExit, restartWorthy, inWindow, doubleStarts, startsOfRemoved,
    };
    this.check(() => this.invariant.afterStep?.(this, step));
    return fx;
  }

  /** Moves the clock on, delivering each scheduled timer at its time. */
  advance(model: ReferenceSupervisor, ms: number): void {
    const target = this.now + ms;
    for (;;) {
      const due = this.timers.filter((t) => t <= target);
      if (due.length === 0) break;
      const t = Math.min(...due);
      this.timers.splice(this.timers.indexOf(t), 1);
      this.now = Math.max(this.now, t);
      this.send(model, { t: 'timer' });
    }
    this.now = target;
  }

  /** Lets every backoff elapse, then checks the end-of-run invariants. */
  finish(model: ReferenceSupervisor): void {
    this.advance(model, Math.max(0, ...this.timers.map((t) => t - this.now)) + 1);
    this.check(() => this.invariant.atEnd?.(this));
  }

  private check(f: () => void): void {
    try {
      f();
    } catch (err) {
      if (err instanceof Error) err.message += `\n  after:\n    ${this.log.slice(-12).join('\n    ')}`;
      throw err;
    }
  }
}

// ---------------------------------------------------------------------------
// Commands and the arbitraries that make them.
// ---------------------------------------------------------------------------

interface Real {
  w: World;
}

class Cmd implements fc.Command<ReferenceSupervisor, Real> {
  constructor(
    private readonly label: string,
    private readonly act: (m: ReferenceSupervisor, w: World) => void,
  ) {}
  check(): boolean {
    return true;
  }
  run(m: ReferenceSupervisor, r: Real): void {
    this.act(m, r.w);
  }
  toString(): string {
    return this.label;
  }
}

const reasonArb = fc.constantFrom<ExitReason>('crash', 'crash', 'normal', 'shutdown');

const commandArbs = [
  // An exit of the child's current incarnation, with or without its generation.
  fc.tuple(fc.nat(9), reasonArb, fc.boolean()).map(
    ([i, reason, withGen]) =>
      new Cmd(`exit(c${i}, ${reason}${withGen ? '' : ', no gen'})`, (m, w) => {
        const child = w.id(i);
        const gen = w.gens.get(child);
        w.send(m, withGen && gen !== undefined ? { t: 'exit', child, reason, gen } : { t: 'exit', child, reason });
      }),
  ),
  // A late exit from an incarnation the supervisor already stopped or replaced.
  fc.tuple(fc.nat(9), reasonArb, fc.integer({ min: 1, max: 3 })).map(
    ([i, reason, back]) =>
      new Cmd(`lateExit(c${i}, ${reason}, gen-${back})`, (m, w) => {
        const child = w.id(i);
        const gen = (w.gens.get(child) ?? 0) - back;
        if (gen >= 1) w.send(m, { t: 'exit', child, reason, gen });
      }),
  ),
  fc.tuple(fc.nat(9), fc.boolean()).map(
    ([i, stale]) =>
      new Cmd(`started(c${i}${stale ? ', stale' : ''})`, (m, w) => {
        const child = w.id(i);
        const gen = w.gens.get(child) ?? 0;
        w.send(m, { t: 'started', child, gen: stale ? gen - 1 : gen });
      }),
  ),
  // Exact periods land restarts on the window's edge.
  fc.oneof(fc.integer({ min: 0, max: 60 }), fc.integer({ min: 0, max: 6000 }), fc.constantFrom(1, 100, 1000, 5000)).map(
    (ms) => new Cmd(`advance(${ms})`, (m, w) => w.advance(m, ms)),
  ),
  // To the last instant at which the oldest restart still counts.
  fc.constant(
    new Cmd('advanceToWindowEdge', (m, w) => {
      const inWindow = w.restartExits.filter((t) => t >= w.now - w.c.flags.periodMs);
      if (inWindow.length > 0) w.advance(m, Math.min(...inWindow) + w.c.flags.periodMs - w.now);
    }),
  ),
  fc.constant(new Cmd('spuriousTimer', (m, w) => void w.send(m, { t: 'timer' }))),
  // A shell's timer may fire a little before its atMs by the supervisor's clock.
  fc.constantFrom(0.5, 1, 10).map(
    (early) =>
      new Cmd(`timerEarlyBy(${early})`, (m, w) => {
        if (w.timers.length === 0) return;
        w.now = Math.max(w.now, Math.min(...w.timers) - early);
        w.send(m, { t: 'timer' });
      }),
  ),
  fc.constant(new Cmd('startAgain', (m, w) => void w.send(m, { t: 'start' }))),
];
// Rare, since it ends the run.
const stopArb = fc.constant(new Cmd('stop', (m, w) => void w.send(m, { t: 'stop' })));

const caseArb: fc.Arbitrary<Case> = fc
  .record({
    strategy: fc.constantFrom<Strategy>('one_for_one', 'one_for_all', 'rest_for_one'),
    intensity: fc.integer({ min: 0, max: 4 }),
    periodMs: fc.constantFrom(1, 100, 1000, 5000),
    backoff: fc.option(
      fc.record({
        initialMs: fc.integer({ min: 0, max: 300 }),
        extra: fc.integer({ min: 1, max: 2000 }),
        factor: fc.constantFrom(1, 1.5, 2, 3),
      }),
      { nil: undefined },
    ),
    restarts: fc.array(fc.constantFrom<RestartType>('permanent', 'transient', 'temporary'), { minLength: 1, maxLength: 5 }),
  })
  .map(({ strategy, intensity, periodMs, backoff, restarts }) => ({
    flags: {
      strategy,
      intensity,
      periodMs,
      initialMs: backoff?.initialMs ?? 0,
      maxMs: backoff ? backoff.initialMs + backoff.extra : 0,
      factor: backoff?.factor ?? 2,
    },
    restarts,
  }));

const programArb = fc.tuple(
  caseArb,
  fc.commands([...commandArbs, ...commandArbs, ...commandArbs, stopArb], { maxCommands: 60, size: 'medium' }),
);

function holds(invariant: Invariant): void {
  fc.assert(
    fc.property(programArb, ([c, cmds]) => {
      const model = new ReferenceSupervisor(c.flags, c.restarts);
      const w = new World(c, invariant);
      w.send(model, { t: 'start' });
      fc.modelRun(() => ({ model, real: { w } }), cmds);
      w.finish(model);
    }),
    { numRuns: 150 },
  );
}

// ---------------------------------------------------------------------------
// Invariants, one property each.
// ---------------------------------------------------------------------------

const restartedOrWaiting = (step: Step, id: string): boolean =>
  ids(step.fx, 'startChild').includes(id) || step.after.states[id] === 'restarting';

/** The children a restart of `failed` should touch, by strategy, in spec order. */
function groupOf(w: World, step: Step, failed: string): string[] {
  const at = index(failed);
  return w.ids.filter(
    (id, j) =>
      !step.removedBefore.has(id) &&
      (id === failed || w.c.flags.strategy === 'one_for_all' || (w.c.flags.strategy === 'rest_for_one' && j > at)),
  );
}

const escalated = (step: Step): boolean => step.fx.some((e) => e.t === 'escalate');

describe('Supervisor, model-based against a reference OTP supervisor', () => {
  it('invariant: effects, child states and restart counts match the reference model after every command', () => {
    holds({
      afterStep(_w, step) {
        expect(step.fx).toEqual(step.expectedFx);
        expect(step.after.states).toEqual(step.model.states());
        expect(step.after.counts).toEqual(step.model.counts());
      },
    });
  });

  it('invariant: the supervisor escalates exactly when more than intensity restarts fall within periodMs', () => {
    holds({
      afterStep(w, step) {
        const should = step.liveExit && step.restartWorthy && step.inWindow > w.c.flags.intensity;
        expect(escalated(step), `${step.inWindow} restarts in the window, intensity ${w.c.flags.intensity}`).toBe(should);
        if (should) {
          expect(step.fx.at(-1)).toMatchObject({ t: 'escalate', reason: 'reached_max_restart_intensity' });
          const failed = step.msg.t === 'exit' ? step.msg.child : '';
          const others = [...step.aliveBefore].filter((id) => id !== failed);
          expect(ids(step.fx, 'stopChild'), 'stops every live child right to left').toEqual(others.sort((a, b) => index(b) - index(a)));
        }
      },
    });
  });

  it('invariant: stops go right to left before starts go left to right, and only to the siblings the strategy names', () => {
    holds({
      afterStep(w, step) {
        const stops = ids(step.fx, 'stopChild').map(index);
        const starts = ids(step.fx, 'startChild').map(index);
        expect(stops, 'stops right to left').toEqual([...stops].sort((a, b) => b - a));
        expect(starts, 'starts left to right').toEqual([...starts].sort((a, b) => a - b));
        const firstStart = step.fx.findIndex((e) => e.t === 'startChild' || e.t === 'schedule');
        const lastStop = step.fx.findLastIndex((e) => e.t === 'stopChild');
        if (firstStart >= 0) expect(lastStop, 'every stop before the first start').toBeLessThan(firstStart);
        if (step.msg.t !== 'exit' || !step.liveExit || !step.restartWorthy || escalated(step)) return;
        const failed = step.msg.child;
        const group = groupOf(w, step, failed);
        const siblings = group.filter((id) => id !== failed);
        expect(ids(step.fx, 'stopChild'), 'stops exactly the live siblings in the group').toEqual(
          siblings.filter((id) => step.aliveBefore.has(id)).reverse(),
        );
        const again = group.filter((id) => id === failed || w.c.restarts[index(id)] !== 'temporary');
        for (const id of again) expect(restartedOrWaiting(step, id), `${id} restarts`).toBe(true);
        for (const id of ids(step.fx, 'startChild')) expect(again).toContain(id);
        for (const id of w.ids) if (!group.includes(id)) expect(step.after.states[id], `${id} is untouched`).toBe(step.before.states[id]);
      },
    });
  });

  it('invariant: permanent children always restart, transient ones only after a crash, temporary ones never', () => {
    holds({
      afterStep(w, step) {
        if (step.msg.t !== 'exit' || !step.liveExit) return;
        const id = step.msg.child;
        const type = w.c.restarts[index(id)];
        if (type === 'temporary' || (type === 'transient' && step.msg.reason !== 'crash')) {
          expect(step.fx).toEqual([{ t: 'removeChild', id }]);
          expect(step.after.states[id]).toBe('removed');
        } else if (!escalated(step)) {
          expect(restartedOrWaiting(step, id)).toBe(true);
        }
        expect(step.startsOfRemoved, 'a removed child is never started').toEqual([]);
      },
      atEnd(w) {
        for (const id of w.removed) expect(childStates(w.s)[id]).toBe('removed');
      },
    });
  });

  it('invariant: a child is never started twice without a stop or exit in between', () => {
    holds({
      afterStep(_w, step) {
        expect(step.doubleStarts).toEqual([]);
      },
    });
  });

  it('invariant: nothing happens after an escalation or a stop', () => {
    holds({
      afterStep(_w, step) {
        if (!step.overBefore) return;
        expect(step.fx).toEqual([]);
        expect(step.after).toEqual(step.before);
      },
    });
  });

  it('invariant: an exit or ack from an incarnation the supervisor stopped changes nothing', () => {
    holds({
      afterStep(_w, step) {
        if (step.msg.t === 'started' || (step.msg.t === 'exit' && !step.liveExit)) {
          expect(step.fx).toEqual([]);
          if (step.msg.t === 'exit') expect(step.after).toEqual(step.before);
        }
      },
    });
  });

  it('invariant: the k-th restart in the window waits initialMs·factor^(k−1) capped at maxMs, and starts when its timer comes', () => {
    holds({
      afterStep(w, step) {
        const { initialMs, maxMs, factor } = w.c.flags;
        if (step.msg.t === 'exit' && step.liveExit && step.restartWorthy && !escalated(step)) {
          const delay = Math.min(maxMs, initialMs * factor ** (step.inWindow - 1));
          const schedules = step.fx.filter((e) => e.t === 'schedule');
          if (delay === 0) {
            expect(schedules).toEqual([]);
            expect(ids(step.fx, 'startChild')).toContain(step.msg.child);
          } else {
            expect(schedules).toEqual([{ t: 'schedule', atMs: step.now + delay }]);
            expect(ids(step.fx, 'startChild')).toEqual([]);
            expect(step.after.states[step.msg.child]).toBe('restarting');
          }
        }
        if (step.msg.t === 'timer') {
          for (const id of ids(step.fx, 'startChild')) expect(step.now, `${id} waited its backoff`).toBeGreaterThanOrEqual(w.dueAt.get(id) ?? 0);
        }
        // A restarting child always has a timer coming that will start it.
        for (const id of w.ids) {
          if (step.after.states[id] !== 'restarting') continue;
          expect(w.timers.some((t) => t <= (w.dueAt.get(id) ?? Infinity)), `${id} has a timer`).toBe(true);
        }
      },
      atEnd(w) {
        expect(Object.values(childStates(w.s))).not.toContain('restarting');
      },
    });
  });
});

// ---------------------------------------------------------------------------
// Examples.
// ---------------------------------------------------------------------------

const kids = (...types: RestartType[]) => types.map((restart, i) => ({ id: `c${i}`, restart }));

function started(spec: SupervisorSpec, now = 0): SupervisorState {
  const s = initialSupervisorState(spec);
  supervisorTransition(s, { t: 'start' }, now);
  for (const c of s.children) supervisorTransition(s, { t: 'started', child: c.spec.id }, now);
  return s;
}

const crash = (child: string): Msg => ({ t: 'exit', child, reason: 'crash' });

describe('Supervisor strategies', () => {
  it('starts the children left to right, once, and stops them right to left', () => {
    const s = initialSupervisorState({ strategy: 'one_for_one', children: kids('permanent', 'transient', 'temporary') });
    expect(childStates(s)).toEqual({ c0: 'stopped', c1: 'stopped', c2: 'stopped' });
    expect(supervisorTransition(s, { t: 'start' }, 0)).toEqual([
      { t: 'startChild', id: 'c0', gen: 1 },
      { t: 'startChild', id: 'c1', gen: 1 },
      { t: 'startChild', id: 'c2', gen: 1 },
    ]);
    expect(supervisorTransition(s, { t: 'start' }, 0)).toEqual([]);
    expect(supervisorTransition(s, { t: 'stop' }, 0)).toEqual([
      { t: 'stopChild', id: 'c2' },
      { t: 'stopChild', id: 'c1' },
      { t: 'stopChild', id: 'c0' },
    ]);
    expect(supervisorTransition(s, { t: 'start' }, 1)).toEqual([]);
  });

  it('marks a child running only when its current incarnation reports started', () => {
    const s = initialSupervisorState({ strategy: 'one_for_one', children: kids('permanent') });
    supervisorTransition(s, { t: 'start' }, 0);
    expect(childStates(s).c0).toBe('starting');
    supervisorTransition(s, crash('c0'), 1);
    supervisorTransition(s, { t: 'started', child: 'c0', gen: 1 }, 2);
    expect(childStates(s).c0).toBe('starting');
    supervisorTransition(s, { t: 'started', child: 'c0', gen: 2 }, 2);
    expect(childStates(s).c0).toBe('running');
  });

  it('one_for_one restarts only the crashed child and leaves its siblings running', () => {
    const s = started({ strategy: 'one_for_one', children: kids('permanent', 'permanent', 'permanent') });
    expect(supervisorTransition(s, crash('c1'), 10)).toEqual([{ t: 'startChild', id: 'c1', gen: 2 }]);
    expect(childStates(s)).toEqual({ c0: 'running', c1: 'starting', c2: 'running' });
    expect(restartCounts(s)).toEqual({ c0: 0, c1: 1, c2: 0 });
  });

  it('one_for_all stops the other children right to left, then restarts all of them left to right', () => {
    const s = started({ strategy: 'one_for_all', children: kids('permanent', 'transient', 'permanent', 'permanent') });
    expect(supervisorTransition(s, crash('c1'), 10)).toEqual([
      { t: 'stopChild', id: 'c3' },
      { t: 'stopChild', id: 'c2' },
      { t: 'stopChild', id: 'c0' },
      { t: 'startChild', id: 'c0', gen: 2 },
      { t: 'startChild', id: 'c1', gen: 2 },
      { t: 'startChild', id: 'c2', gen: 2 },
      { t: 'startChild', id: 'c3', gen: 2 },
    ]);
    expect(restartCounts(s)).toEqual({ c0: 1, c1: 1, c2: 1, c3: 1 });
  });

  it('one_for_all stops a temporary sibling for good instead of restarting it', () => {
    const s = started({ strategy: 'one_for_all', children: kids('permanent', 'temporary', 'permanent') });
    expect(supervisorTransition(s, crash('c2'), 10)).toEqual([
      { t: 'stopChild', id: 'c1' },
      { t: 'removeChild', id: 'c1' },
      { t: 'stopChild', id: 'c0' },
      { t: 'startChild', id: 'c0', gen: 2 },
      { t: 'startChild', id: 'c2', gen: 2 },
    ]);
    expect(childStates(s)).toEqual({ c0: 'starting', c1: 'removed', c2: 'starting' });
  });

  it('rest_for_one stops the children started after the crashed one right to left, then restarts it and them left to right', () => {
    const s = started({ strategy: 'rest_for_one', intensity: 3, children: kids('permanent', 'permanent', 'permanent', 'permanent') });
    expect(supervisorTransition(s, crash('c1'), 10)).toEqual([
      { t: 'stopChild', id: 'c3' },
      { t: 'stopChild', id: 'c2' },
      { t: 'startChild', id: 'c1', gen: 2 },
      { t: 'startChild', id: 'c2', gen: 2 },
      { t: 'startChild', id: 'c3', gen: 2 },
    ]);
    expect(childStates(s).c0).toBe('running');
    // The last child has nothing after it.
    expect(supervisorTransition(s, crash('c3'), 20)).toEqual([{ t: 'startChild', id: 'c3', gen: 3 }]);
  });

  it('ignores the exit of a sibling it stopped itself, so that exit does not count as a crash', () => {
    const s = started({ strategy: 'one_for_all', children: kids('permanent', 'permanent') });
    supervisorTransition(s, crash('c0'), 10);
    // c1 (gen 1) was stopped by the supervisor; its exit arrives after the restart began.
    expect(supervisorTransition(s, { t: 'exit', child: 'c1', reason: 'shutdown', gen: 1 }, 11)).toEqual([]);
    expect(supervisorTransition(s, { t: 'exit', child: 'c1', reason: 'crash', gen: 1 }, 11)).toEqual([]);
    expect(restartsInWindow(s, 11)).toBe(1);
    expect(childStates(s)).toEqual({ c0: 'starting', c1: 'starting' });
  });
});

describe('Supervisor restart types', () => {
  it('restarts a transient child after a crash but removes it after a normal exit or a shutdown', () => {
    const s = started({ strategy: 'one_for_one', intensity: 5, children: kids('transient', 'transient') });
    expect(supervisorTransition(s, crash('c0'), 1)).toEqual([{ t: 'startChild', id: 'c0', gen: 2 }]);
    expect(supervisorTransition(s, { t: 'exit', child: 'c0', reason: 'normal' }, 2)).toEqual([{ t: 'removeChild', id: 'c0' }]);
    expect(supervisorTransition(s, { t: 'exit', child: 'c1', reason: 'shutdown' }, 3)).toEqual([{ t: 'removeChild', id: 'c1' }]);
    expect(childStates(s)).toEqual({ c0: 'removed', c1: 'removed' });
    expect(restartsInWindow(s, 3)).toBe(1);
  });

  it('never restarts a temporary child, whatever the reason, and does not count its exit', () => {
    for (const reason of ['crash', 'normal', 'shutdown'] as const) {
      const s = started({ strategy: 'one_for_all', intensity: 0, children: kids('permanent', 'temporary') });
      expect(supervisorTransition(s, { t: 'exit', child: 'c1', reason }, 1)).toEqual([{ t: 'removeChild', id: 'c1' }]);
      expect(childStates(s)).toEqual({ c0: 'running', c1: 'removed' });
    }
  });

  it('always restarts a permanent child, even after a normal exit', () => {
    const s = started({ strategy: 'one_for_one', intensity: 5, children: kids('permanent') });
    expect(supervisorTransition(s, { t: 'exit', child: 'c0', reason: 'normal' }, 1)).toEqual([{ t: 'startChild', id: 'c0', gen: 2 }]);
    expect(supervisorTransition(s, { t: 'exit', child: 'c0', reason: 'shutdown' }, 2)).toEqual([{ t: 'startChild', id: 'c0', gen: 3 }]);
  });
});

describe('Supervisor restart intensity', () => {
  it("defaults to OTP's 1 restart in 5 s: the second crash within 5 s escalates", () => {
    const s = started({ strategy: 'one_for_one', children: kids('permanent', 'permanent', 'permanent') }, 1000);
    expect(supervisorTransition(s, crash('c0'), 1000)).toEqual([{ t: 'startChild', id: 'c0', gen: 2 }]);
    expect(supervisorTransition(s, crash('c2'), 5999)).toEqual([
      { t: 'stopChild', id: 'c1' },
      { t: 'stopChild', id: 'c0' },
      { t: 'escalate', reason: 'reached_max_restart_intensity', child: 'c2', exit: 'crash' },
    ]);
    expect(childStates(s)).toEqual({ c0: 'stopped', c1: 'stopped', c2: 'stopped' });
  });

  it('restarts again once the first restart has left the 5 s window', () => {
    const s = started({ strategy: 'one_for_one', children: kids('permanent') });
    supervisorTransition(s, crash('c0'), 1000);
    expect(supervisorTransition(s, crash('c0'), 6001)).toEqual([{ t: 'startChild', id: 'c0', gen: 3 }]);
    expect(restartsInWindow(s, 6001)).toBe(1);
  });

  it('counts a restart exactly periodMs old as inside the window, as OTP does', () => {
    const s = started({ strategy: 'one_for_one', intensity: 1, periodMs: 100, children: kids('permanent') });
    supervisorTransition(s, crash('c0'), 0);
    expect(supervisorTransition(s, crash('c0'), 100).at(-1)).toMatchObject({ t: 'escalate' });
  });

  it('escalates on the first restart when intensity is 0', () => {
    const s = started({ strategy: 'one_for_one', intensity: 0, children: kids('permanent') });
    expect(supervisorTransition(s, crash('c0'), 0)).toEqual([
      { t: 'escalate', reason: 'reached_max_restart_intensity', child: 'c0', exit: 'crash' },
    ]);
  });

  it('does nothing at all after escalating', () => {
    const s = started({ strategy: 'one_for_all', intensity: 0, children: kids('permanent', 'permanent') });
    supervisorTransition(s, crash('c1'), 0);
    const before = childStates(s);
    for (const msg of [{ t: 'start' }, crash('c0'), { t: 'started', child: 'c0' }, { t: 'timer' }, { t: 'stop' }] as Msg[]) {
      expect(supervisorTransition(s, msg, 10)).toEqual([]);
    }
    expect(childStates(s)).toEqual(before);
    expect(s.phase).toBe('escalated');
  });
});

describe('Supervisor backoff', () => {
  it('delays the k-th restart in the window by initialMs·factor^(k−1), capped at maxMs', () => {
    const s = started({
      strategy: 'one_for_one', intensity: 10, periodMs: 100_000,
      backoff: { initialMs: 100, maxMs: 500, factor: 2 }, children: kids('permanent'),
    });
    let now = 0;
    const delays: number[] = [];
    for (let k = 1; k <= 5; k++) {
      const fx = supervisorTransition(s, crash('c0'), now);
      expect(childStates(s).c0).toBe('restarting');
      const at = fx.find((e) => e.t === 'schedule')!.atMs;
      delays.push(at - now);
      now = at;
      expect(supervisorTransition(s, { t: 'timer' }, now)).toEqual([{ t: 'startChild', id: 'c0', gen: k + 1 }]);
    }
    expect(delays).toEqual([100, 200, 400, 500, 500]);
  });

  it('stops siblings at once but starts them only when the backoff ends', () => {
    const s = started({ strategy: 'one_for_all', backoff: { initialMs: 50, maxMs: 1000 }, children: kids('permanent', 'permanent') });
    expect(supervisorTransition(s, crash('c0'), 10)).toEqual([{ t: 'stopChild', id: 'c1' }, { t: 'schedule', atMs: 60 }]);
    expect(childStates(s)).toEqual({ c0: 'restarting', c1: 'restarting' });
    expect(supervisorTransition(s, { t: 'exit', child: 'c1', reason: 'crash' }, 20)).toEqual([]);
    expect(supervisorTransition(s, { t: 'timer' }, 60)).toEqual([
      { t: 'startChild', id: 'c0', gen: 2 },
      { t: 'startChild', id: 'c1', gen: 2 },
    ]);
  });

  it('reschedules when a timer fires before the backoff ends', () => {
    const s = started({ strategy: 'one_for_one', backoff: { initialMs: 50, maxMs: 50 }, children: kids('permanent') });
    supervisorTransition(s, crash('c0'), 0);
    expect(supervisorTransition(s, { t: 'timer' }, 49.5)).toEqual([{ t: 'schedule', atMs: 50 }]);
    expect(supervisorTransition(s, { t: 'timer' }, 50)).toEqual([{ t: 'startChild', id: 'c0', gen: 2 }]);
  });

  it('drops a pending restart when the supervisor is stopped during the backoff', () => {
    const s = started({ strategy: 'one_for_one', backoff: { initialMs: 50, maxMs: 50 }, children: kids('permanent', 'permanent') });
    supervisorTransition(s, crash('c0'), 0);
    expect(supervisorTransition(s, { t: 'stop' }, 10)).toEqual([{ t: 'stopChild', id: 'c1' }]);
    expect(supervisorTransition(s, { t: 'timer' }, 50)).toEqual([]);
    expect(childStates(s)).toEqual({ c0: 'stopped', c1: 'stopped' });
  });
});

describe('checkSupervisorSpec', () => {
  it('fills in OTP defaults: intensity 1, periodMs 5000, no backoff', () => {
    expect(checkSupervisorSpec({ strategy: 'rest_for_one', children: kids('permanent') })).toEqual({
      strategy: 'rest_for_one', intensity: 1, periodMs: 5000, backoff: { initialMs: 0, maxMs: 0, factor: 2 }, children: kids('permanent'),
    });
    const withBackoff = checkSupervisorSpec({ strategy: 'one_for_one', backoff: { maxMs: 10 }, children: [] });
    expect(withBackoff.backoff).toEqual({ initialMs: 0, maxMs: 10, factor: 2 });
  });

  const ok = { strategy: 'one_for_one', children: kids('permanent') };
  it.each<[string, unknown, typeof TypeError | typeof RangeError, RegExp]>([
    ['a spec that is not an object', null, TypeError, /spec must be an object, got null/],
    ['a strategy that is not a string', { ...ok, strategy: 1 }, TypeError, /strategy must be a string, got 1/],
    ['an unknown strategy', { ...ok, strategy: 'simple_one_for_one' }, RangeError, /strategy must be one of one_for_one, one_for_all, rest_for_one, got 'simple_one_for_one'/],
    ['an intensity that is not a number', { ...ok, intensity: '1' }, TypeError, /intensity must be a number, got '1'/],
    ['a negative intensity', { ...ok, intensity: -1 }, RangeError, /intensity must be an integer ≥ 0, got -1/],
    ['a fractional intensity', { ...ok, intensity: 1.5 }, RangeError, /intensity must be an integer ≥ 0, got 1.5/],
    ['a periodMs of 0', { ...ok, periodMs: 0 }, RangeError, /periodMs must be an integer ≥ 1, got 0/],
    ['a NaN periodMs', { ...ok, periodMs: NaN }, RangeError, /periodMs must be an integer ≥ 1, got NaN/],
    ['a backoff that is not an object', { ...ok, backoff: 5 }, TypeError, /backoff must be an object, got 5/],
    ['a backoff without maxMs', { ...ok, backoff: { initialMs: 5 } }, TypeError, /backoff.maxMs must be a number, got undefined/],
    ['a negative backoff.initialMs', { ...ok, backoff: { initialMs: -1, maxMs: 5 } }, RangeError, /backoff.initialMs must be a finite number ≥ 0, got -1/],
    ['an infinite backoff.maxMs', { ...ok, backoff: { maxMs: Infinity } }, RangeError, /backoff.maxMs must be a finite number ≥ 0, got Infinity/],
    ['a backoff.factor below 1', { ...ok, backoff: { maxMs: 5, factor: 0.5 } }, RangeError, /backoff.factor must be ≥ 1, got 0.5/],
    ['a backoff.maxMs below initialMs', { ...ok, backoff: { initialMs: 10, maxMs: 5 } }, RangeError, /backoff.maxMs 5 is below backoff.initialMs 10/],
    ['children that are not an array', { ...ok, children: {} }, TypeError, /children must be an array, got an object/],
    ['a child that is not an object', { ...ok, children: ['c0'] }, TypeError, /child 0 must be an object, got 'c0'/],
    ['a child id that is not a string', { ...ok, children: [{ id: 7, restart: 'permanent' }] }, TypeError, /child 0 id must be a string, got 7/],
    ['an empty child id', { ...ok, children: [{ id: '', restart: 'permanent' }] }, RangeError, /child 0 id must not be empty/],
    ['a duplicate child id', { ...ok, children: [...kids('permanent', 'transient'), { id: 'c1', restart: 'temporary' }] }, RangeError, /child id 'c1' is not unique/],
    ['a restart type that is not a string', { ...ok, children: [{ id: 'a', restart: true }] }, TypeError, /child 'a' restart must be a string, got true/],
    ['an unknown restart type', { ...ok, children: [{ id: 'a', restart: 'sometimes' }] }, RangeError, /child 'a' restart must be one of permanent, transient, temporary, got 'sometimes'/],
  ])('rejects %s', (_what, spec, type, message) => {
    const check = () => checkSupervisorSpec(spec as SupervisorSpec);
    expect(check).toThrow(type);
    expect(check).toThrow(message);
    // The constructor too, since it checks the spec it is given.
    expect(() => initialSupervisorState(spec as SupervisorSpec)).toThrow(type);
  });
});
