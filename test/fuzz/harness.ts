/**
 * What the node-level fuzz tests share: a well-behaved client whose every
 * answer is checked against a direct onnxruntime run, a log sink in memory,
 * a watch on nact's default supervisor (it prints and stops a faulted actor),
 * and a small pool to run hostile connections side by side.
 */
import { Writable } from 'node:stream';
import * as ort from 'onnxruntime-node';
import { pino, type Logger } from 'pino';
import { afterAll, beforeAll, vi, type MockInstance } from 'vitest';
import { ActorserveNode } from '../../src/actors/Node.js';
import { irisModelPath, resolveModels } from '../../src/models/registry.js';
import type { RequestId, ResultFrame } from '../../src/transport/protocol.js';
import { IrisLoad, type LoadReport } from '../helpers/load.js';
import { RawClient, readF32 } from '../helpers/RawClient.js';
import { snapshotPrototypes, type ProtoSnapshot } from './hostile.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` until it holds; throws naming `what` after `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const until = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > until) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(5);
  }
}

/** A pino logger writing JSON lines to memory. */
export function memoryLogger(level: 'debug' | 'info' | 'warn'): { log: Logger; lines: () => Record<string, unknown>[] } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      raw.push(chunk.toString('utf8'));
      done();
    },
  });
  const log = pino({ level }, stream);
  const lines = () =>
    raw
      .join('')
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { log, lines };
}

/** nact's default supervision policy reports a crashed actor with console.log before stopping it. */
export function watchActorFaults(): { faults: () => string[]; restore: () => void } {
  const spy: MockInstance = vi.spyOn(console, 'log');
  return {
    faults: () => spy.mock.calls.map((c) => c.map(String).join(' ')).filter((s) => s.includes('Terminating faulted actor')),
    restore: () => spy.mockRestore(),
  };
}

/** Runs `tasks` with at most `n` at a time. */
export async function pool<T>(n: number, tasks: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(tasks.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, tasks.length) }, async () => {
      while (next < tasks.length) {
        const i = next++;
        out[i] = await tasks[i]!();
      }
    }),
  );
  return out;
}

const argmax = (p: ArrayLike<number>) => {
  let best = 0;
  for (let i = 1; i < p.length; i++) if (p[i]! > p[best]!) best = i;
  return best;
};

export interface GoodReport extends LoadReport {
  /** Results whose argmax differs from a direct onnxruntime run of the same row. */
  wrong: number;
  /** Longest time without a result while the load ran, ms. */
  maxGapMs: number;
  rows: number;
}

/**
 * A well-behaved client streaming iris requests on its own connection for
 * as long as it runs; every answer is compared with a direct onnxruntime
 * run of the row it asked about.
 */
export class GoodClient {
  private readonly started = performance.now();
  private load!: IrisLoad;

  private constructor(
    readonly client: RawClient,
    private readonly inputs: ReadonlyMap<RequestId, Uint8Array>,
    private readonly results: readonly ResultFrame[],
    private readonly times: readonly number[],
  ) {}

  static async start(url: string, prefix: string): Promise<GoodClient> {
    const client = await RawClient.connect(url);
    const inputs = new Map<RequestId, Uint8Array>();
    const results: ResultFrame[] = [];
    const times: number[] = [];
    const request = client.request.bind(client);
    // Remember what each id asked, whatever row the load helper picks.
    client.request = (frame) => {
      inputs.set(frame.id, (frame['inputs'] as { input: { data: Uint8Array } }).input.data);
      return request(frame);
    };
    const self = new GoodClient(client, inputs, results, times);
    self.load = new IrisLoad(client, {
      window: 16,
      maxRequests: 1_000_000,
      maxMs: 120_000,
      prefix,
      onResult: (f) => {
        results.push(f);
        times.push(performance.now());
      },
    });
    return self;
  }

  /** Stops sending, waits for the last answers and checks every one. */
  async finish(): Promise<GoodReport> {
    this.load.stop();
    const report = await this.load.done;
    const session = await ort.InferenceSession.create(irisModelPath, { intraOpNumThreads: 1 });
    const reference = new Map<string, number>();
    let wrong = 0;
    for (const f of this.results) {
      const data = this.inputs.get(f.id);
      const out = f.outputs['probabilities'];
      if (!data || !out || out.shape.join() !== '1,3') {
        wrong++;
        continue;
      }
      const key = Buffer.from(data).toString('hex');
      let want = reference.get(key);
      if (want === undefined) {
        const x = new ort.Tensor('float32', readF32(data), [1, 4]);
        const r = await session.run({ [session.inputNames[0]!]: x });
        want = argmax(r[session.outputNames[0]!]!.data as Float32Array);
        reference.set(key, want);
      }
      if (argmax(readF32(out.data)) !== want) wrong++;
    }
    await session.release();
    let maxGapMs = 0;
    let last = this.started;
    for (const t of this.times) {
      maxGapMs = Math.max(maxGapMs, t - last);
      last = t;
    }
    this.client.close();
    return { ...report, wrong, maxGapMs: Math.round(maxGapMs), rows: reference.size };
  }
}

/** What a fuzz suite inspects after the storm: the node, its log lines, prototypes before it, actor crashes. */
export interface FuzzTarget {
  node: ActorserveNode;
  logs: ReturnType<typeof memoryLogger>;
  protos: ProtoSnapshot;
  actorFaults: ReturnType<typeof watchActorFaults>;
}

/**
 * One in-process iris node `fz` for the file's tests, started before them
 * (after snapshotting prototypes and watching actor faults) and stopped after.
 * Its fields are set once `beforeAll` has run.
 */
export function useFuzzNode(level: 'debug' | 'info' | 'warn', clusterSecret: string): FuzzTarget {
  const t = {} as FuzzTarget;
  beforeAll(async () => {
    t.protos = snapshotPrototypes();
    t.actorFaults = watchActorFaults();
    t.logs = memoryLogger(level);
    t.node = await ActorserveNode.start({ nodeId: 'fz', port: 0, models: resolveModels(['iris']), clusterSecret, log: t.logs.log });
  });
  afterAll(async () => {
    t.actorFaults?.restore();
    await t.node?.stop();
  });
  return t;
}
