/**
 * A bounded closed-loop load over one raw connection that records every
 * reply frame, so tests can check exactly-once and no cross-talk.
 */
import { expect } from 'vitest';
import type { ErrorFrame, ResultFrame } from '../../src/transport/protocol.js';
import { RawClient, irisInput } from './RawClient.js';

export interface LoadReport {
  sent: number;
  results: number;
  errors: Record<string, number>;
  /** Requests with more than one reply frame. */
  duplicates: number;
  /** Requests with no reply at the end. */
  lost: number;
  /** Replies carrying an id this client never sent. */
  foreign: number;
  byNode: Record<string, number>;
}

/** A well-behaved client saw every one of its (at least `minSent`) requests answered with a result, once, and nothing of anyone else's. */
export function expectEveryResult(report: LoadReport, minSent = 1): void {
  expect(report.sent).toBeGreaterThanOrEqual(minSent);
  expect(report.errors).toEqual({});
  expect(report).toMatchObject({ duplicates: 0, lost: 0, foreign: 0 });
  expect(report.results).toBe(report.sent);
}

export interface LoadOptions {
  window: number;
  /** Stop sending after this many requests. */
  maxRequests: number;
  /** Stop sending after this long. */
  maxMs: number;
  /** Id prefix, so concurrent loads never share ids. */
  prefix: string;
  onResult?: (f: ResultFrame) => void;
  /** Time to wait for the last replies. Default 20 s. */
  drainMs?: number;
}

const ROWS = [
  [5.1, 3.5, 1.4, 0.2],
  [6.2, 2.9, 4.3, 1.3],
  [7.7, 3.0, 6.1, 2.3],
];

export class IrisLoad {
  private stopped = false;
  readonly done: Promise<LoadReport>;

  constructor(readonly client: RawClient, o: LoadOptions) {
    this.done = this.run(o);
  }

  stop(): void {
    this.stopped = true;
  }

  private async run(o: LoadOptions): Promise<LoadReport> {
    const c = this.client;
    const started = performance.now();
    let sent = 0;
    let inFlight = 0;
    const ids: string[] = [];
    const byNode: Record<string, number> = {};
    await new Promise<void>((resolve) => {
      const pump = () => {
        while (!this.stopped && inFlight < o.window && sent < o.maxRequests && performance.now() - started < o.maxMs) {
          const id = `${o.prefix}-${sent}`;
          ids.push(id);
          sent++;
          inFlight++;
          void c.request({ id, model: 'iris', inputs: irisInput(ROWS[sent % ROWS.length]!) }).then((f: ResultFrame | ErrorFrame) => {
            inFlight--;
            if (f.t === 'result') {
              byNode[f.node] = (byNode[f.node] ?? 0) + 1;
              o.onResult?.(f);
            }
            pump();
          }, () => {
            inFlight--;
            pump();
          });
        }
        if (inFlight === 0) resolve();
      };
      pump();
    });
    const drainUntil = performance.now() + (o.drainMs ?? 20_000);
    while (ids.some((id) => !c.replies.has(id)) && performance.now() < drainUntil) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200)); // room for any duplicate to show up
    const report: LoadReport = { sent, results: 0, errors: {}, duplicates: 0, lost: 0, foreign: 0, byNode };
    const mine = new Set(ids);
    for (const [id, frames] of c.replies) {
      if (!mine.has(String(id))) report.foreign += frames.length;
    }
    for (const id of ids) {
      const frames = c.replies.get(id) ?? [];
      if (frames.length === 0) report.lost++;
      if (frames.length > 1) report.duplicates++;
      const f = frames[0];
      if (f?.t === 'result') report.results++;
      else if (f?.t === 'error') report.errors[f.code] = (report.errors[f.code] ?? 0) + 1;
    }
    return report;
  }
}
