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
 * This drains up to {@link MAX_MESSAGES_PER_TURN} messages, or
 * {@link MAX_TURN_MS} of work, per scheduled turn instead. nact's contract is
 * unchanged: messages are handled one at a time in arrival order, an async
 * handler is awaited before the next, a throw goes to the actor's `onCrash`,
 * and a stopped actor handles nothing more. Installed once, on import, for
 * every actor system in the process.
 */
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

export const MAX_MESSAGES_PER_TURN = 256;
export const MAX_TURN_MS = 2;

/** The parts of nact's internal `Actor` this touches (nact 7.6). */
interface NactActor {
  busy: boolean;
  stopped: boolean;
  state: unknown;
  immediate: ReturnType<typeof setImmediate> | undefined;
  mailbox: { shift(): { message: unknown; sender: unknown } | undefined };
  f: (this: unknown, state: unknown, msg: unknown, ctx: unknown) => unknown;
  createContext(sender: unknown): unknown;
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

async function drain(actor: NactActor, message: unknown, sender: unknown): Promise<void> {
  const started = performance.now();
  for (let handled = 1; ; handled++) {
    try {
      const ctx = actor.createContext(sender);
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
    if (!queued) {
      // nact's own processNext, for an empty mailbox: idle, and its idle timer (shutdownAfter) runs.
      actor.busy = false;
      actor.setTimeout();
      return;
    }
    message = queued.message;
    sender = queued.sender;
  }
  // Out of budget for this turn: let I/O and other actors run, then go on.
  actor.processNext();
}

let installed = false;

export function installNactScheduling(): void {
  if (installed) return;
  installed = true;
  Actor.prototype.handleMessage = function handleMessage(this: NactActor, message: unknown, sender: unknown) {
    this.busy = true;
    this.immediate = setImmediate(() => void drain(this, message, sender));
  };
}

installNactScheduling();
