/**
 * nact runs one message per actor per event-loop turn: after each message
 * its actor schedules the next with `setImmediate`, and an immediate queued
 * from inside an immediate waits for the next turn, behind an I/O poll. The
 * session actor of a busy client and each model's batcher sit on the hot
 * path, so a node under load handled one client frame (and one batcher
 * message) per turn: frames piled up, inbound flow control paused the socket,
 * and an `overloaded` answer waited hundreds of ms before it was even
 * decided.
 *
 * This changes two things:
 *
 * - An actor drains up to {@link MAX_MESSAGES_PER_TURN} messages, or
 *   {@link MAX_TURN_MS} of work, per scheduled run instead of one.
 * - An idle actor given a message runs in a microtask, not a later turn,
 *   while the actor work chained that way since the event loop last got a
 *   turn is under {@link MAX_CHAIN_MS}; past it, in the next turn. A request
 *   crosses five or six actors (session, router, batcher, worker and back):
 *   with an immediate per hop a lone request took ~8 event-loop turns, each
 *   an `epoll_pwait` and timer pass, which at light load cost more CPU than
 *   the request itself.
 *
 * nact's contract is unchanged: messages are handled one at a time in
 * arrival order, an async handler is awaited before the next, a throw goes
 * to the actor's `onCrash`, and a stopped actor handles nothing more.
 * Installed once, on import, for every actor system in the process.
 */
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

export const MAX_MESSAGES_PER_TURN = 256;
export const MAX_TURN_MS = 2;
/** Actor work run back to back in microtasks before the event loop gets a turn. */
export const MAX_CHAIN_MS = 2;

/** The parts of nact's internal `Actor` this touches (nact 7.6). */
interface NactActor {
  busy: boolean;
  stopped: boolean;
  state: unknown;
  immediate: ReturnType<typeof setImmediate> | undefined;
  mailbox: { shift(): { message: unknown; sender: unknown } | undefined };
  f: (this: unknown, state: unknown, msg: unknown, ctx: unknown) => unknown;
  parent: { reference: unknown } | undefined;
  path: unknown;
  reference: unknown;
  name: string;
  childReferences: Map<string, unknown>;
  log: unknown;
  afterMessage(): void;
  processNext(): void;
  setTimeout(): void;
  handleFault(msg: unknown, sender: unknown, e: unknown): void;
  handleMessage(message: unknown, sender: unknown): void;
}

const require = createRequire(import.meta.url);
const { Actor } = require('nact/lib/actor') as { Actor: { prototype: NactActor } };

const isThenable = (x: unknown): x is PromiseLike<unknown> =>
  x !== null && (typeof x === 'object' || typeof x === 'function') && typeof (x as { then?: unknown }).then === 'function';

/**
 * nact's message context (its `createContext`), except that `children` is
 * built when read. nact copies the actor's child map into the context of
 * every message, so each message cost a Map, and the root actor has a child
 * per connection; this project's handlers read only `self`.
 */
class MessageContext {
  readonly parent: unknown;
  readonly path: unknown;
  readonly self: unknown;
  readonly name: string;
  readonly log: unknown;

  constructor(
    private readonly actor: NactActor,
    readonly sender: unknown,
  ) {
    this.parent = actor.parent ? actor.parent.reference : undefined;
    this.path = actor.path;
    this.self = actor.reference;
    this.name = actor.name;
    this.log = actor.log;
  }

  get children(): Map<string, unknown> {
    return new Map(this.actor.childReferences);
  }
}

/** nact's own processNext, for an empty mailbox: idle, and its idle timer (shutdownAfter) runs. */
function idle(actor: NactActor): void {
  actor.busy = false;
  actor.setTimeout();
}

async function drain(actor: NactActor, message: unknown, sender: unknown): Promise<void> {
  if (actor.stopped) return; // stopped while this run was scheduled: nact clears its immediate, a microtask cannot be
  const started = performance.now();
  for (let handled = 1; ; handled++) {
    try {
      const ctx = new MessageContext(actor, sender);
      let next = actor.f.call(ctx, actor.state, message, ctx);
      if (isThenable(next)) next = await next;
      actor.state = next;
      actor.afterMessage();
    } catch (e) {
      actor.handleFault(message, sender, e);
      return;
    }
    if (actor.stopped) return;
    if (handled >= MAX_MESSAGES_PER_TURN || performance.now() - started >= MAX_TURN_MS) break;
    const queued = actor.mailbox.shift();
    if (!queued) return idle(actor);
    message = queued.message;
    sender = queued.sender;
  }
  // Out of budget for this turn: let I/O and other actors run, then go on.
  const next = actor.mailbox.shift();
  if (!next) return idle(actor);
  actor.immediate = setImmediate(() => void drain(actor, next.message, next.sender));
}

/** When the actor work chained in microtasks since the event loop's last turn began; undefined when none is. */
let chainStartedAt: number | undefined;
const endChain = () => {
  chainStartedAt = undefined;
};

let installed = false;

export function installNactScheduling(): void {
  if (installed) return;
  installed = true;
  Actor.prototype.handleMessage = function handleMessage(this: NactActor, message: unknown, sender: unknown) {
    this.busy = true;
    const now = performance.now();
    if (chainStartedAt === undefined) {
      chainStartedAt = now;
      setImmediate(endChain);
    }
    if (now - chainStartedAt < MAX_CHAIN_MS) queueMicrotask(() => void drain(this, message, sender));
    else this.immediate = setImmediate(() => void drain(this, message, sender));
  };
}

installNactScheduling();
