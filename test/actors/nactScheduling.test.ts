import { describe, expect, it } from 'vitest';
import { dispatch, spawn, start, stop } from 'nact';
import { MAX_MESSAGES_PER_TURN } from '../../src/actors/nactScheduling.js';

const turns = async (n: number) => {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
};

describe('actor mailboxes drain many messages per event-loop turn', () => {
  it('handles a burst of messages within two turns, one at a time and in order (nact alone needs a turn per message)', async () => {
    const system = start();
    const seen: number[] = [];
    let running = 0;
    let overlapped = false;
    const a = spawn(system, (s: null, n: number) => {
      if (running++ > 0) overlapped = true;
      seen.push(n);
      running--;
      return s;
    });
    const burst = 100;
    for (let i = 0; i < burst; i++) dispatch(a, i);
    await turns(2);
    expect(seen).toEqual(Array.from({ length: burst }, (_, i) => i));
    expect(overlapped).toBe(false);
    stop(system);
  });

  it('yields to I/O after its per-turn budget, then goes on', async () => {
    const system = start();
    let handled = 0;
    const a = spawn(system, (s: null) => {
      handled++;
      return s;
    });
    const burst = 3 * MAX_MESSAGES_PER_TURN;
    for (let i = 0; i < burst; i++) dispatch(a, i);
    await turns(1);
    expect(handled).toBeGreaterThan(0);
    expect(handled).toBeLessThanOrEqual(MAX_MESSAGES_PER_TURN);
    await turns(6);
    expect(handled).toBe(burst);
    stop(system);
  });

  it('awaits an async handler before the next message, and keeps the state each handler returns', async () => {
    const system = start();
    const log: string[] = [];
    const a = spawn(
      system,
      async (count: number, msg: string) => {
        log.push(`start ${msg} at ${count}`);
        await new Promise((r) => setTimeout(r, 2));
        log.push(`end ${msg}`);
        return count + 1;
      },
      'async',
      { initialState: 0 },
    );
    dispatch(a, 'a');
    dispatch(a, 'b');
    await new Promise((r) => setTimeout(r, 50));
    expect(log).toEqual(['start a at 0', 'end a', 'start b at 1', 'end b']);
    stop(system);
  });

  it('sends a throw to onCrash, which decides what happens to the rest of the mailbox', async () => {
    const system = start();
    const seen: string[] = [];
    const crashes: string[] = [];
    const a = spawn(
      system,
      (s: null, msg: string) => {
        if (msg === 'boom') throw new Error('boom');
        seen.push(msg);
        return s;
      },
      'crashy',
      {
        onCrash: (msg, _err, ctx) => {
          crashes.push(String(msg));
          return ctx.resume;
        },
      },
    );
    for (const m of ['a', 'boom', 'b', 'c']) dispatch(a, m);
    await turns(4);
    expect(crashes).toEqual(['boom']);
    expect(seen).toEqual(['a', 'b', 'c']);
    stop(system);
  });

  it('handles nothing more once a handler stops its own actor', async () => {
    const system = start();
    const seen: string[] = [];
    const a = spawn(system, (s: null, msg: string, ctx: { self: Parameters<typeof stop>[0] }) => {
      seen.push(msg);
      if (msg === 'stop') stop(ctx.self);
      return s;
    });
    for (const m of ['a', 'stop', 'b']) dispatch(a, m);
    await turns(3);
    expect(seen).toEqual(['a', 'stop']);
    stop(system);
  });
});
