import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Deque } from '../../src/actors/Deque.js';

/** The model is a plain array; `next` numbers the values so any reordering shows. */
interface Model {
  items: number[];
  next: number;
}

type Cmd = fc.Command<Model, Deque<number>>;

/** Compares everything observable; `expect` only runs (for its diff) on a mismatch, so big deques stay cheap. */
function assertSame(d: Deque<number>, m: Model): void {
  const got = [...d];
  const same = d.length === m.items.length && got.length === m.items.length && got.every((x, i) => x === m.items[i]);
  if (!same) expect({ length: d.length, items: got }).toEqual({ length: m.items.length, items: m.items });
  expect(d.peek()).toBe(m.items[0]);
}

class PushCmd implements Cmd {
  constructor(readonly n: number) {}
  check = () => true;
  run(m: Model, d: Deque<number>): void {
    for (let i = 0; i < this.n; i++) {
      const x = m.next++;
      d.push(x);
      m.items.push(x);
    }
    assertSame(d, m);
  }
  toString = () => `push×${this.n}`;
}

class UnshiftCmd implements Cmd {
  constructor(readonly n: number) {}
  check = () => true;
  run(m: Model, d: Deque<number>): void {
    for (let i = 0; i < this.n; i++) {
      const x = m.next++;
      d.unshift(x);
      m.items.unshift(x);
    }
    assertSame(d, m);
  }
  toString = () => `unshift×${this.n}`;
}

/** Shifts past the end too: shifting an empty deque gives undefined and changes nothing. */
class ShiftCmd implements Cmd {
  constructor(readonly n: number) {}
  check = () => true;
  run(m: Model, d: Deque<number>): void {
    for (let i = 0; i < this.n; i++) {
      const want = m.items.shift();
      const got = d.shift();
      if (got !== want) expect({ shift: i, got }).toEqual({ shift: i, got: want });
    }
    assertSame(d, m);
  }
  toString = () => `shift×${this.n}`;
}

class RemoveWhereCmd implements Cmd {
  constructor(
    readonly mod: number,
    readonly rem: number,
  ) {}
  check = () => true;
  run(m: Model, d: Deque<number>): void {
    const pred = (x: number) => x % this.mod === this.rem;
    const removed = d.removeWhere(pred);
    expect(removed).toEqual(m.items.filter(pred));
    m.items = m.items.filter((x) => !pred(x));
    assertSame(d, m);
  }
  toString = () => `removeWhere(x % ${this.mod} === ${this.rem})`;
}

// Bulk pushes and shifts carry the deque past the 1024-element dead prefix that triggers compaction.
const commandArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 3, arbitrary: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 500, max: 1500 })).map((n) => new PushCmd(n)) },
  { weight: 3, arbitrary: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 500, max: 1500 })).map((n) => new ShiftCmd(n)) },
  { weight: 2, arbitrary: fc.integer({ min: 1, max: 5 }).map((n) => new UnshiftCmd(n)) },
  { weight: 1, arbitrary: fc.integer({ min: 2, max: 7 }).chain((mod) => fc.nat({ max: mod - 1 }).map((rem) => new RemoveWhereCmd(mod, rem))) },
);

describe('Deque', () => {
  it('behaves like an array under any mix of push, shift, unshift and removeWhere, across compactions', () => {
    fc.assert(
      fc.property(fc.commands([commandArb], { maxCommands: 40, size: 'max' }), (cmds) => {
        fc.modelRun(() => ({ model: { items: [], next: 0 }, real: new Deque<number>() }), cmds);
      }),
      { numRuns: 100 },
    );
  });

  it('keeps its order across the compaction after 1024 shifts, and unshifts into the freed prefix', () => {
    const d = new Deque<number>();
    const model: number[] = [];
    for (let i = 0; i < 3000; i++) {
      d.push(i);
      model.push(i);
    }
    for (let i = 0; i < 2000; i++) expect(d.shift()).toBe(model.shift());
    d.unshift(-1);
    d.unshift(-2);
    model.unshift(-2, -1);
    d.push(3000);
    model.push(3000);

    expect(d.length).toBe(model.length);
    expect([...d]).toEqual(model);
    expect(d.peek()).toBe(-2);
  });

  it('is empty after removeWhere takes everything, and keeps working', () => {
    const d = new Deque<string>();
    for (const x of ['a', 'b', 'c']) d.push(x);
    d.shift();

    expect(d.removeWhere(() => true)).toEqual(['b', 'c']);
    expect(d.length).toBe(0);
    expect(d.shift()).toBeUndefined();
    expect(d.peek()).toBeUndefined();
    d.unshift('z');
    expect([...d]).toEqual(['z']);
  });
});
