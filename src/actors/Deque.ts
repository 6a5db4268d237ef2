/** Array-backed double-ended queue: O(1) amortised push, shift and unshift. */
export class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(x: T): void {
    this.items.push(x);
  }

  unshift(x: T): void {
    if (this.head > 0) this.items[--this.head] = x;
    else this.items.unshift(x);
  }

  /** The i-th newest item (0 is the newest). */
  fromEnd(i: number): T | undefined {
    const at = this.items.length - 1 - i;
    return at >= this.head ? this.items[at] : undefined;
  }

  pop(): T | undefined {
    if (this.items.length <= this.head) return undefined;
    return this.items.pop();
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    // Compact once the dead prefix dominates, so memory tracks the live length.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }

  /** Removes every item matching `pred`, keeping order; returns the removed. */
  removeWhere(pred: (x: T) => boolean): T[] {
    const kept: T[] = [];
    const removed: T[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const x = this.items[i] as T;
      (pred(x) ? removed : kept).push(x);
    }
    this.items = kept;
    this.head = 0;
    return removed;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (let i = this.head; i < this.items.length; i++) yield this.items[i] as T;
  }
}
