import fc from 'fast-check';
import type { AddressInfo, Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { overBudget, receivingBytes } from '../../src/transport/byteBudget.js';
import { frameHead } from '../helpers/RawClient.js';

const pick = (held: readonly number[], budget: number) => overBudget(held.keys(), (i) => held[i]!, budget);
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

describe('overBudget', () => {
  it('closes nobody while the total fits, the largest backlog first once it does not, and no more than it takes', () => {
    expect(pick([100, 50, 0], 150)).toEqual({ victims: [], total: 150 });
    expect(pick([100, 50, 30], 150)).toEqual({ victims: [0], total: 180 });
    expect(pick([10, 300, 200, 5], 100)).toEqual({ victims: [1, 2], total: 515 });
    expect(pick([], 0)).toEqual({ victims: [], total: 0 });
    // A connection holding nothing is never a victim, even when the budget is 0.
    expect(pick([0, 7, 0], 0)).toEqual({ victims: [1], total: 7 });
  });

  const heldArb = fc.array(fc.nat({ max: 1 << 24 }), { maxLength: 50 });
  const budgetArb = fc.nat({ max: 1 << 26 });

  it('invariant: what the survivors hold fits the budget', () => {
    fc.assert(
      fc.property(heldArb, budgetArb, (held, budget) => {
        const { victims, total } = pick(held, budget);
        expect(total).toBe(sum(held));
        const gone = new Set(victims);
        expect(sum(held.filter((_, i) => !gone.has(i)))).toBeLessThanOrEqual(budget);
      }),
    );
  });

  it('invariant: every victim holds at least as much as every survivor, and sparing the last victim would not fit', () => {
    fc.assert(
      fc.property(heldArb, budgetArb, (held, budget) => {
        const { victims } = pick(held, budget);
        if (victims.length === 0) return;
        const gone = new Set(victims);
        const smallestVictim = Math.min(...victims.map((i) => held[i]!));
        for (let i = 0; i < held.length; i++) if (!gone.has(i)) expect(held[i]!).toBeLessThanOrEqual(smallestVictim);
        const last = victims[victims.length - 1]!;
        expect(sum(held.filter((_, i) => !gone.has(i))) + held[last]!).toBeGreaterThan(budget);
        expect(victims.every((i) => held[i]! > 0)).toBe(true);
      }),
    );
  });
});

describe('receivingBytes', () => {
  it("reads what ws holds of a frame still arriving (its parser's private state, pinned here) and nothing once the frame is whole", async () => {
    const server = new WebSocketServer({ port: 0, host: '127.0.0.1', perMessageDeflate: false });
    await new Promise((r) => server.once('listening', r));
    try {
      const accepted = new Promise<WebSocket>((r) => server.once('connection', r));
      const client = new WebSocket(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`, { perMessageDeflate: false });
      await new Promise((r) => client.once('open', r));
      const ws = await accepted;
      const got = new Promise<Buffer>((r) => ws.once('message', r));
      // A binary frame of 100 000 bytes, written in two parts.
      const head = frameHead(100_000);
      const socket = (client as unknown as { _socket: Socket })._socket;
      socket.write(Buffer.concat([head, Buffer.alloc(60_000, 1)]));
      const until = Date.now() + 5_000;
      while (receivingBytes(ws) < 60_000 && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
      expect(receivingBytes(ws)).toBe(60_000);
      socket.write(Buffer.alloc(40_000, 1));
      expect((await got).length).toBe(100_000);
      expect(receivingBytes(ws)).toBe(0);
      client.terminate();
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
