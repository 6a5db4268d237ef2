/**
 * OTP supervision as a transition function: `supervisorTransition(state,
 * msg, now)` updates the state it is given and returns the effects for the
 * actor shell to carry out, in order (stop a child, start one, set a timer,
 * forget a child, escalate to the parent). No nact, timers or threads here,
 * so tests drive it on simulated time.
 *
 * Follows OTP's `supervisor.erl`: the spec is checked when built
 * (`check_flags`); children start left to right and stop right to left;
 * `permanent` children always restart, `transient` ones only after a crash,
 * `temporary` ones never; a restart is counted against the supervisor's
 * intensity (`add_restart`: more than `intensity` restarts within `periodMs`
 * makes it stop every child and give up). On top of OTP, an optional
 * exponential backoff delays a restart, and every start carries a
 * generation so an exit or ack from an incarnation the supervisor already
 * stopped is recognised and ignored.
 *
 * Two departures from OTP, both deliberate: a transient child that exits
 * normally is removed for good (OTP keeps its spec, so a later one_for_all
 * restart would start it again); and the starts of one restart come out
 * together, in order, rather than each waiting for the previous child's
 * `started` (nact spawns synchronously; `started` only marks readiness).
 *
 * Supersedes the per-worker `RestartIntensity.ts`: that one counts restarts
 * per child and forgets a restart exactly `periodMs` old; this one counts them
 * per supervisor and, like OTP, keeps it.
 */

export type Strategy = 'one_for_one' | 'one_for_all' | 'rest_for_one';
export type RestartType = 'permanent' | 'transient' | 'temporary';
/** `crash` is the only abnormal exit: `normal` and `shutdown` do not restart a transient child. */
export type ExitReason = 'normal' | 'shutdown' | 'crash';
export type ChildState = 'starting' | 'running' | 'restarting' | 'stopped' | 'removed';

export interface ChildSpec {
  /** Unique within the supervisor, non-empty. */
  readonly id: string;
  readonly restart: RestartType;
}

export interface BackoffSpec {
  /** Delay of the first restart in the window. Default 0 (immediate). */
  readonly initialMs?: number;
  /** Cap on any delay; at least `initialMs`. */
  readonly maxMs: number;
  /** Each further restart in the window waits this many times longer. Default 2; at least 1. */
  readonly factor?: number;
}

export interface SupervisorSpec<C extends ChildSpec = ChildSpec> {
  readonly strategy: Strategy;
  /** Restarts allowed within `periodMs`; one more escalates. Default 1 (OTP). */
  readonly intensity?: number;
  /** Length of the sliding window, milliseconds on a monotonic clock. Default 5000 (OTP). */
  readonly periodMs?: number;
  /** Default none: restarts are immediate. */
  readonly backoff?: BackoffSpec;
  /** In start order. */
  readonly children: readonly C[];
}

/** A spec with its defaults filled in, as `checkSupervisorSpec` returns it. */
export interface CheckedSupervisorSpec<C extends ChildSpec = ChildSpec> {
  readonly strategy: Strategy;
  readonly intensity: number;
  readonly periodMs: number;
  readonly backoff: { readonly initialMs: number; readonly maxMs: number; readonly factor: number };
  readonly children: readonly C[];
}

export const DEFAULT_INTENSITY = 1;
export const DEFAULT_PERIOD_MS = 5000;

const STRATEGIES: readonly Strategy[] = ['one_for_one', 'one_for_all', 'rest_for_one'];
const RESTART_TYPES: readonly RestartType[] = ['permanent', 'transient', 'temporary'];

/**
 * Validates a spec and fills in its defaults (intensity 1, periodMs 5000, no
 * backoff; backoff initialMs 0, factor 2).
 * @throws TypeError when the spec, a field or a child has the wrong type.
 * @throws RangeError when a value is out of range: an unknown strategy or
 *   restart type, intensity not an integer ≥ 0, periodMs not an integer ≥ 1,
 *   a backoff field negative or not finite (NaN included), factor < 1,
 *   maxMs < initialMs, an empty or duplicate child id.
 */
export function checkSupervisorSpec<C extends ChildSpec>(spec: SupervisorSpec<C>): CheckedSupervisorSpec<C> {
  if (typeof spec !== 'object' || spec === null) throw new TypeError(`supervisor spec must be an object, got ${describe(spec)}`);
  if (typeof spec.strategy !== 'string') throw new TypeError(`supervisor strategy must be a string, got ${describe(spec.strategy)}`);
  if (!STRATEGIES.includes(spec.strategy)) {
    throw new RangeError(`supervisor strategy must be one of ${STRATEGIES.join(', ')}, got '${spec.strategy}'`);
  }
  const intensity = spec.intensity ?? DEFAULT_INTENSITY;
  checkNumber('intensity', intensity);
  if (!Number.isInteger(intensity) || intensity < 0) throw new RangeError(`supervisor intensity must be an integer ≥ 0, got ${intensity}`);
  const periodMs = spec.periodMs ?? DEFAULT_PERIOD_MS;
  checkNumber('periodMs', periodMs);
  if (!Number.isInteger(periodMs) || periodMs < 1) throw new RangeError(`supervisor periodMs must be an integer ≥ 1, got ${periodMs}`);

  let backoff = { initialMs: 0, maxMs: 0, factor: 2 };
  if (spec.backoff !== undefined) {
    if (typeof spec.backoff !== 'object' || spec.backoff === null) {
      throw new TypeError(`supervisor backoff must be an object, got ${describe(spec.backoff)}`);
    }
    backoff = { initialMs: spec.backoff.initialMs ?? 0, maxMs: spec.backoff.maxMs, factor: spec.backoff.factor ?? 2 };
    for (const k of ['initialMs', 'maxMs', 'factor'] as const) {
      checkNumber(`backoff.${k}`, backoff[k]);
      if (!Number.isFinite(backoff[k]) || backoff[k] < 0) throw new RangeError(`supervisor backoff.${k} must be a finite number ≥ 0, got ${backoff[k]}`);
    }
    if (backoff.factor < 1) throw new RangeError(`supervisor backoff.factor must be ≥ 1, got ${backoff.factor}`);
    if (backoff.maxMs < backoff.initialMs) {
      throw new RangeError(`supervisor backoff.maxMs ${backoff.maxMs} is below backoff.initialMs ${backoff.initialMs}`);
    }
  }

  if (!Array.isArray(spec.children)) throw new TypeError(`supervisor children must be an array, got ${describe(spec.children)}`);
  const seen = new Set<string>();
  spec.children.forEach((c: C, i) => {
    if (typeof c !== 'object' || c === null) throw new TypeError(`supervisor child ${i} must be an object, got ${describe(c)}`);
    if (typeof c.id !== 'string') throw new TypeError(`supervisor child ${i} id must be a string, got ${describe(c.id)}`);
    if (c.id === '') throw new RangeError(`supervisor child ${i} id must not be empty`);
    if (seen.has(c.id)) throw new RangeError(`supervisor child id '${c.id}' is not unique`);
    seen.add(c.id);
    if (typeof c.restart !== 'string') throw new TypeError(`supervisor child '${c.id}' restart must be a string, got ${describe(c.restart)}`);
    if (!RESTART_TYPES.includes(c.restart)) {
      throw new RangeError(`supervisor child '${c.id}' restart must be one of ${RESTART_TYPES.join(', ')}, got ${describe(c.restart)}`);
    }
  });
  return { strategy: spec.strategy, intensity, periodMs, backoff, children: [...spec.children] };
}

function checkNumber(name: string, v: unknown): void {
  if (typeof v !== 'number') throw new TypeError(`supervisor ${name} must be a number, got ${describe(v)}`);
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : String(v);
}

// ---------------------------------------------------------------------------

export type SupervisorMsg =
  /** Start every child, left to right. Only the first one counts. */
  | { t: 'start' }
  /**
   * A child's process ended. `gen`, the generation of the `startChild` it
   * came from, lets the supervisor ignore the exit of an incarnation it
   * already stopped or replaced; without it the exit applies to the current one.
   */
  | { t: 'exit'; child: string; reason: ExitReason; gen?: number }
  /** A child finished starting. `gen` as for `exit`. */
  | { t: 'started'; child: string; gen?: number }
  /** A `schedule`d time came. Early or repeated ones are harmless. */
  | { t: 'timer' }
  /** Stop every child, right to left; the supervisor is done. */
  | { t: 'stop' };

export type SupervisorEffect =
  /** Start the child; its exits and acks should carry `gen`. */
  | { t: 'startChild'; id: string; gen: number }
  /** Stop the child (the supervisor already counts it as stopped; its exit will be ignored). */
  | { t: 'stopChild'; id: string }
  /** Send `{t:'timer'}` at `atMs` on the same clock as `now` (or later). */
  | { t: 'schedule'; atMs: number }
  /** The child is gone for good: forget it. */
  | { t: 'removeChild'; id: string }
  /** Restart intensity exceeded: every child is stopped, the supervisor gives up, and its parent decides. */
  | { t: 'escalate'; reason: 'reached_max_restart_intensity'; child: string; exit: ExitReason };

interface ChildSlot<C extends ChildSpec> {
  readonly spec: C;
  state: ChildState;
  /** Generation of the latest start; 0 before the first. */
  gen: number;
  /** Starts after the first. */
  restarts: number;
  /** While `restarting`: when the backoff ends. */
  dueAt: number;
}

export type SupervisorPhase = 'idle' | 'running' | 'stopped' | 'escalated';

export interface SupervisorState<C extends ChildSpec = ChildSpec> {
  readonly spec: CheckedSupervisorSpec<C>;
  /** In spec order. */
  readonly children: readonly ChildSlot<C>[];
  readonly byId: ReadonlyMap<string, ChildSlot<C>>;
  phase: SupervisorPhase;
  /** Times of the restarts still inside the window, oldest first. */
  readonly restartTimes: number[];
}

/** @throws TypeError or RangeError as `checkSupervisorSpec`. */
export function initialSupervisorState<C extends ChildSpec>(spec: SupervisorSpec<C>): SupervisorState<C> {
  const checked = checkSupervisorSpec(spec);
  const children = checked.children.map((c): ChildSlot<C> => ({ spec: c, state: 'stopped', gen: 0, restarts: 0, dueAt: 0 }));
  return { spec: checked, children, byId: new Map(children.map((c) => [c.spec.id, c])), phase: 'idle', restartTimes: [] };
}

/**
 * Applies `msg` at `now` (milliseconds on a monotonic clock) and returns the
 * effects to carry out, in order. After `stop` or an escalation every
 * message is ignored.
 */
export function supervisorTransition<C extends ChildSpec>(s: SupervisorState<C>, msg: SupervisorMsg, now: number): SupervisorEffect[] {
  const fx: SupervisorEffect[] = [];
  if (s.phase === 'stopped' || s.phase === 'escalated') return fx;
  switch (msg.t) {
    case 'start':
      if (s.phase !== 'idle') break;
      s.phase = 'running';
      for (const c of s.children) start(c, false, fx);
      break;
    case 'stop':
      stopAll(s, fx);
      s.phase = 'stopped';
      break;
    case 'started': {
      const c = s.byId.get(msg.child);
      if (s.phase === 'running' && c?.state === 'starting' && (msg.gen === undefined || msg.gen === c.gen)) c.state = 'running';
      break;
    }
    case 'exit': {
      const c = s.byId.get(msg.child);
      if (s.phase !== 'running' || c === undefined || !isLive(c) || (msg.gen !== undefined && msg.gen !== c.gen)) break;
      onExit(s, c, msg.reason, now, fx);
      break;
    }
    case 'timer': {
      if (s.phase !== 'running') break;
      let next = Infinity;
      for (const c of s.children) {
        if (c.state !== 'restarting') continue;
        if (c.dueAt <= now) start(c, true, fx);
        else next = Math.min(next, c.dueAt);
      }
      // A timer that fired early (a shell's timers and its clock can disagree by a tick) must not strand a restart.
      if (next !== Infinity) fx.push({ t: 'schedule', atMs: next });
      break;
    }
    default:
      return assertNever(msg);
  }
  return fx;
}

/** Each child's state, in spec order. */
export function childStates<C extends ChildSpec>(s: SupervisorState<C>): Record<string, ChildState> {
  return Object.fromEntries(s.children.map((c) => [c.spec.id, c.state]));
}

/** How many times each child was started again after its first start, in spec order. */
export function restartCounts<C extends ChildSpec>(s: SupervisorState<C>): Record<string, number> {
  return Object.fromEntries(s.children.map((c) => [c.spec.id, c.restarts]));
}

/** Restarts counted against the intensity in the window ending at `now`. */
export function restartsInWindow<C extends ChildSpec>(s: SupervisorState<C>, now: number): number {
  return s.restartTimes.filter((t) => t >= now - s.spec.periodMs).length;
}

/**
 * Delay of the k-th restart in the window (k ≥ 1): initialMs·factor^(k−1),
 * capped at maxMs; 0 when the spec has no backoff.
 */
export function backoffDelay(spec: CheckedSupervisorSpec<ChildSpec>, k: number): number {
  const { initialMs, maxMs, factor } = spec.backoff;
  return Math.min(maxMs, initialMs * factor ** (k - 1));
}

const isLive = (c: ChildSlot<ChildSpec>): boolean => c.state === 'starting' || c.state === 'running';

function start<C extends ChildSpec>(c: ChildSlot<C>, again: boolean, fx: SupervisorEffect[]): void {
  if (c.state === 'removed') return;
  c.gen++;
  if (again) c.restarts++;
  c.state = 'starting';
  fx.push({ t: 'startChild', id: c.spec.id, gen: c.gen });
}

function onExit<C extends ChildSpec>(s: SupervisorState<C>, failed: ChildSlot<C>, reason: ExitReason, now: number, fx: SupervisorEffect[]): void {
  const type = failed.spec.restart;
  if (type === 'temporary' || (type === 'transient' && reason !== 'crash')) {
    failed.state = 'removed';
    fx.push({ t: 'removeChild', id: failed.spec.id });
    return;
  }
  failed.state = 'stopped';
  // OTP's add_restart: the window is [now − period, now], this restart included.
  const threshold = now - s.spec.periodMs;
  while (s.restartTimes.length > 0 && s.restartTimes[0]! < threshold) s.restartTimes.shift();
  s.restartTimes.push(now);
  const k = s.restartTimes.length;
  if (k > s.spec.intensity) {
    stopAll(s, fx);
    s.phase = 'escalated';
    fx.push({ t: 'escalate', reason: 'reached_max_restart_intensity', child: failed.spec.id, exit: reason });
    return;
  }

  const i = s.children.indexOf(failed);
  const affected =
    s.spec.strategy === 'one_for_one' ? [failed] : s.spec.strategy === 'one_for_all' ? s.children : s.children.slice(i);
  // Siblings go right to left; a temporary one is stopped for good, as OTP's terminate_children does.
  for (let j = affected.length - 1; j >= 0; j--) {
    const c = affected[j]!;
    if (c === failed || c.state === 'removed') continue;
    if (isLive(c)) fx.push({ t: 'stopChild', id: c.spec.id });
    if (c.spec.restart === 'temporary') {
      c.state = 'removed';
      fx.push({ t: 'removeChild', id: c.spec.id });
    } else {
      c.state = 'stopped';
    }
  }
  const delay = backoffDelay(s.spec, k);
  if (delay <= 0) {
    for (const c of affected) start(c, true, fx);
    return;
  }
  for (const c of affected) {
    if (c.state === 'removed') continue;
    c.state = 'restarting';
    c.dueAt = now + delay;
  }
  fx.push({ t: 'schedule', atMs: now + delay });
}

function stopAll<C extends ChildSpec>(s: SupervisorState<C>, fx: SupervisorEffect[]): void {
  for (let j = s.children.length - 1; j >= 0; j--) {
    const c = s.children[j]!;
    if (c.state === 'removed') continue;
    if (isLive(c)) fx.push({ t: 'stopChild', id: c.spec.id });
    c.state = 'stopped';
  }
}

function assertNever(x: never): never {
  throw new Error(`unhandled supervisor message ${JSON.stringify(x)}`);
}
