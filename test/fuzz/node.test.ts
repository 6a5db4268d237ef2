/**
 * Hostile clients against a real node in this process, while a well-behaved
 * client streams iris requests on its own connection the whole time.
 *
 * Every hostile frame's fate is predicted by decoding and checking it here
 * first: not msgpack → close 1007; fails the schema → `invalid_request`
 * (same id) and the connection lives on; accepted → exactly the replies a
 * client may get. Text frames close with 1003, frames over the limit with
 * 1009. The good client must get every answer, right, once; the node must
 * stay up, responsive, with nothing left in flight and no prototype changed.
 *
 * Replay a run with FUZZ_SEED=<seed> (printed in every failure message).
 */
import fc from 'fast-check';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import { parseClientFrame, type ErrorFrame, type RequestId, type ServerFrame } from '../../src/transport/protocol.js';
import { RawClient, irisInput } from '../helpers/RawClient.js';
import { GoodClient, pool, sleep, useFuzzNode } from './harness.js';
import {
  HEADERS,
  HOLES,
  bytes,
  deepNesting,
  header,
  irisTensorArb,
  isRequestId,
  maxCount,
  mutate,
  mutationArb,
  packPlain,
  packedValueArb,
  protoKeyFrameArb,
  prototypeChanges,
  snapshotPrototypes,
  type HeaderKind,
  type NestKind,
} from './hostile.js';

const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 0x7fffffff));
const seeded = (what: string) => `${what} (FUZZ_SEED=${SEED})`;
const sample = <T>(arb: fc.Arbitrary<T>, n: number, salt: number): T[] => fc.sample(arb, { seed: SEED + salt, numRuns: n });

/** What a client may be answered for a frame the schema accepted (it may still fail admission). */
const ACCEPTED_CODES = new Set(['invalid_request', 'model_not_found', 'cancelled', 'overloaded', 'deadline_exceeded']);

type Prediction =
  | { t: 'undecodable' }
  /** Nesting near the stack limit: whether it decodes depends on how deep the caller's stack already is. */
  | { t: 'tooDeep' }
  | { t: 'invalid'; id: RequestId | null }
  | { t: 'accepted'; kind: string; id: RequestId | null };

/** The fate of a frame, from the same decoder and schema check the node uses. */
function predict(frame: Uint8Array): Prediction {
  let v: unknown;
  try {
    v = decodeUntrusted(frame);
  } catch (e) {
    return e instanceof RangeError && /call stack/.test(e.message) ? { t: 'tooDeep' } : { t: 'undecodable' };
  }
  let parsed: ReturnType<typeof parseClientFrame>;
  try {
    parsed = parseClientFrame(v);
  } catch {
    // The contract still says invalid_request; the node will be judged on it.
    const id = (v as Record<string, unknown> | null)?.['id'];
    return { t: 'invalid', id: isRequestId(id) ? (id as RequestId) : null };
  }
  return parsed.ok ? { t: 'accepted', kind: parsed.frame.t, id: 'id' in parsed.frame ? parsed.frame.id : null } : { t: 'invalid', id: parsed.id };
}

type Step = { kind: 'binary'; data: Uint8Array; p: Prediction } | { kind: 'text'; data: string } | { kind: 'oversize'; data: Uint8Array };

interface Script {
  name: string;
  steps: Step[];
  /**
   * The close code the server must send; undefined when the connection must live until the client
   * closes it; `1007 or invalid` for a frame that may or may not decode (close 1007, or one invalid_request).
   */
  expectClose: 1003 | 1007 | 1009 | '1007 or invalid' | undefined;
}

const bin = (data: Uint8Array): Step => ({ kind: 'binary', data, p: predict(data) });

/** A connection's steps, cut after the first one that must close it. */
function script(name: string, steps: Step[]): Script {
  const out: Step[] = [];
  let expectClose: Script['expectClose'];
  for (const s of steps) {
    out.push(s);
    expectClose = s.kind === 'text' ? 1003 : s.kind === 'oversize' ? 1009 : s.p.t === 'undecodable' ? 1007 : s.p.t === 'tooDeep' ? '1007 or invalid' : undefined;
    if (expectClose) break;
  }
  return { name, steps: out, expectClose };
}

/** Frames split into connections of at most `per` frames, each ending at its first undecodable frame. */
function scripts(name: string, frames: Uint8Array[], per: number): Script[] {
  const out: Script[] = [];
  let rest = frames.map(bin);
  while (rest.length > 0) {
    const s = script(`${name}#${out.length}`, rest.slice(0, per));
    out.push(s);
    rest = rest.slice(s.steps.length);
  }
  return out;
}

interface Outcome {
  script: Script;
  frames: ServerFrame[];
  close: { code: number; reason: string } | undefined;
  complete: boolean;
}

const isSubsequence = (want: readonly unknown[], got: readonly unknown[]) => {
  let i = 0;
  for (const g of got) if (i < want.length && Object.is(g, want[i])) i++;
  return i === want.length;
};

const invalidIds = (s: Script) => s.steps.flatMap((st) => (st.kind === 'binary' && st.p.t === 'invalid' ? [st.p.id] : []));
const acceptedInferIds = (s: Script) => s.steps.flatMap((st) => (st.kind === 'binary' && st.p.t === 'accepted' && st.p.kind === 'infer' ? [st.p.id] : []));
const errorsOf = (frames: readonly ServerFrame[]) => frames.filter((f): f is ErrorFrame => f.t === 'error');

/** Every reply the script's frames are owed has arrived. */
function repliesComplete(s: Script, frames: readonly ServerFrame[]): boolean {
  const invalid = errorsOf(frames).filter((f) => f.code === 'invalid_request').map((f) => f.id);
  if (!isSubsequence(invalidIds(s), invalid)) return false;
  const answered = new Set(frames.map((f) => (f.t === 'welcome' ? undefined : f.id)));
  return acceptedInferIds(s).every((id) => answered.has(id));
}

async function runScript(url: string, s: Script): Promise<Outcome> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const frames: ServerFrame[] = [];
  let close: Outcome['close'];
  const closed = new Promise<void>((resolve) =>
    ws.on('close', (code, reason) => {
      close = { code, reason: reason.toString() };
      resolve();
    }),
  );
  ws.on('error', () => undefined);
  const welcomed = new Promise<void>((resolve) => {
    ws.on('message', (d: Buffer) => {
      const f = decodeUntrusted(d) as ServerFrame;
      if (f.t === 'welcome') resolve();
      else frames.push(f);
    });
    void closed.then(resolve);
  });
  await welcomed;
  for (const st of s.steps) {
    if (ws.readyState !== ws.OPEN) break;
    ws.send(st.data, { binary: st.kind !== 'text' });
  }
  const until = performance.now() + 10_000;
  if (s.expectClose === '1007 or invalid') {
    while (!close && errorsOf(frames).length === 0 && performance.now() < until) await sleep(5);
    if (!close) ws.close(1000);
    await Promise.race([closed, sleep(5_000)]);
  } else if (s.expectClose) {
    await Promise.race([closed, sleep(10_000)]);
  } else {
    while (!close && !repliesComplete(s, frames) && performance.now() < until) await sleep(5);
    ws.close(1000);
    await Promise.race([closed, sleep(5_000)]);
  }
  return { script: s, frames, close, complete: repliesComplete(s, frames) };
}

/** Connect, send requests, vanish: half by a TCP reset, half by a close frame, some before the welcome. */
async function churn(url: string, frames: readonly Uint8Array[], i: number): Promise<void> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => ws.on('close', () => resolve()));
  if (i % 5 === 4) {
    ws.on('upgrade', () => ws.terminate());
  } else {
    await new Promise<void>((resolve) => {
      ws.once('open', resolve);
      void closed.then(resolve);
    });
    for (const f of frames) if (ws.readyState === ws.OPEN) ws.send(f);
    if (i % 2 === 0) ws.terminate();
    else ws.close(1000);
  }
  await Promise.race([closed, sleep(5_000)]);
}

/** Problems with one hostile connection's outcome; empty when it behaved as the contract says. */
function judge(o: Outcome): string[] {
  const s = o.script;
  const bad: string[] = [];
  const mayDecode = s.expectClose === '1007 or invalid';
  const sentIds = new Set<unknown>(s.steps.flatMap((st) => (st.kind === 'binary' && (st.p.t === 'invalid' || st.p.t === 'accepted') ? [st.p.id] : [])));
  const acceptedIds = new Set<unknown>(s.steps.flatMap((st) => (st.kind === 'binary' && st.p.t === 'accepted' ? [st.p.id] : [])));
  const invalidOnly = s.steps.every((st) => st.kind !== 'binary' || st.p.t !== 'accepted');
  for (const f of o.frames) {
    if (f.t === 'result') {
      if (!acceptedIds.has(f.id)) bad.push(`result for ${String(f.id)}, which it never sent in an accepted frame`);
    } else if (f.t === 'error') {
      if (f.id !== null && !sentIds.has(f.id) && !mayDecode) bad.push(`error for ${String(f.id)}, which it never sent`);
      if (invalidOnly ? f.code !== 'invalid_request' : !ACCEPTED_CODES.has(f.code)) bad.push(`error code ${f.code}: ${f.message}`);
    } else {
      bad.push(`unexpected frame ${(f as { t: string }).t}`);
    }
  }
  // No id answered more often than frames carrying it were accepted (a duplicate reply).
  const replies = new Map<unknown, number>();
  for (const f of o.frames) if (f.t !== 'welcome') replies.set(f.id, (replies.get(f.id) ?? 0) + 1);
  const offers = new Map<unknown, number>();
  for (const st of s.steps) if (st.kind === 'binary' && (st.p.t === 'invalid' || st.p.t === 'accepted')) offers.set(st.p.id, (offers.get(st.p.id) ?? 0) + 1);
  for (const [id, n] of replies) if (id !== null && n > (offers.get(id) ?? (mayDecode ? 1 : 0))) bad.push(`${n} replies for ${String(id)}`);
  if (mayDecode) {
    const decoded = o.close?.code === 1000 && errorsOf(o.frames).length === 1;
    if (!(o.close?.code === 1007 || decoded)) bad.push(`a frame at the stack limit got close ${o.close?.code ?? 'nothing'} and ${o.frames.length} replies`);
  } else if (s.expectClose) {
    if (o.close?.code !== s.expectClose) bad.push(`closed with ${o.close?.code ?? 'nothing'} (${o.close?.reason ?? ''}), wanted ${s.expectClose}`);
    // Frames before an undecodable one are handled in order, so their errors all go out before the close.
    if (s.expectClose === 1007 && !isSubsequence(invalidIds(s), errorsOf(o.frames).filter((f) => f.code === 'invalid_request').map((f) => f.id))) {
      bad.push('an invalid frame before the undecodable one got no invalid_request');
    }
  } else {
    if (o.close?.code !== 1000) bad.push(`the server closed it: ${o.close?.code ?? 'still open'} (${o.close?.reason ?? ''})`);
    if (!o.complete) bad.push('replies missing: an invalid frame without invalid_request, or an accepted infer without any reply');
  }
  return bad.map((b) => `${s.name}: ${b}`);
}

const fz = useFuzzNode('warn', 'fuzz-secret');

describe('a node under hostile clients', () => {
  it('answers garbage by the contract, keeps every hostile connection apart and serves a good client throughout: every answer, right, once', async () => {
    const probe = await RawClient.connect(fz.node.url);
    const limit = probe.welcome.limits.maxFrameBytes;
    probe.close();
    const goodIds = fc.integer({ min: 0, max: 4000 }).map((k) => `good-${k}`);
    const irisFrame = fc.record({
      t: fc.constant('infer'),
      id: fc.oneof(goodIds, fc.nat({ max: 50 })),
      model: fc.constant('iris'),
      inputs: fc.record({ input: irisTensorArb }),
    });

    const all: Script[] = [];
    const byteFrames = sample(
      fc.oneof(fc.uint8Array({ maxLength: 200 }), fc.tuple(fc.constantFrom(0x80, 0x81, 0x84, 0x85, 0xde, 0xdf, 0xd4, 0xc7), fc.uint8Array({ maxLength: 64 })).map(([h, r]) => bytes(h, r))),
      300,
      1,
    );
    all.push(...scripts('bytes', byteFrames, 20));
    all.push(...scripts('values', sample(packedValueArb, 500, 2), 40));
    all.push(...scripts('mutated', sample(fc.tuple(irisFrame, fc.array(mutationArb, { minLength: 1, maxLength: 3 })).map(([f, ms]) => mutate(encode(f), ms)), 700, 3), 40));
    all.push(...scripts('proto', sample(protoKeyFrameArb, 250, 4), 40));
    for (const kind of Object.keys(HEADERS) as HeaderKind[]) {
      for (const hole of ['root', 'inputs', 'data'] as const) all.push(script(`huge-${kind}-${hole}`, [bin(HOLES[hole](header(kind, maxCount(kind))))]));
    }
    for (const kind of ['array', 'map', 'protoMap', 'set', 'array32', 'extWrapped', 'mixed'] as NestKind[]) {
      for (const depth of [1_000, 10_000, 100_000]) {
        const frame = HOLES.inputs(deepNesting(kind, depth));
        // Near the stack limit the outcome depends on the stack depth of the caller, here and in the node alike.
        all.push(script(`deep-${kind}-${depth}`, [depth === 10_000 ? { kind: 'binary', data: frame, p: { t: 'tooDeep' } } : bin(frame)]));
      }
    }
    const valid = (id: RequestId) => bin(encode({ t: 'infer', id, model: 'iris', inputs: irisInput([5.9, 3.0, 5.1, 1.8]) }));
    // Costly to look at but legal: a 4 MiB typed array where inputs belong (it once cost seconds), a wide map, a 1 MiB big int.
    const typed = HOLES.inputs(bytes(header('ext32', (4 << 20) + 1, 0x74), 0));
    const typedInputs = new Uint8Array(typed.length + (4 << 20));
    typedInputs.set(typed);
    const wide = packPlain({ t: 'infer', id: 'wide', model: 'iris', inputs: Object.fromEntries(Array.from({ length: 60_000 }, (_, i) => [`k${i}`, i])) });
    const bigInt = new Uint8Array(6 + (1 << 20));
    bigInt.set(HOLES.id(bytes(header('ext32', 1 << 20, 0x42))));
    all.push(script('expensive', [bin(typedInputs), bin(wide), bin(typedInputs), bin(bigInt), valid('after-expensive')]));
    for (const [i, text] of ['hello', '{"t":"infer","id":1}', '', '\u0000\u00ff'].entries()) {
      all.push(script(`text-${i}`, [{ kind: 'text', data: text }]));
      all.push(script(`text-after-binary-${i}`, [valid(`t${i}-a`), bin(encode({ t: 'nope', id: `t${i}-b` })), { kind: 'text', data: text }]));
    }
    all.push(script('over-limit-by-1', [{ kind: 'oversize', data: new Uint8Array(limit + 1) }]));
    all.push(script('over-limit-after-binary', [valid('o-1'), { kind: 'oversize', data: new Uint8Array(limit + 1000) }]));
    const atLimit = new Uint8Array(limit);
    atLimit.set(header('bin32', limit - 5));
    all.push(script('at-limit', [bin(atLimit), valid('after-at-limit')]));
    for (let c = 0; c < 4; c++) {
      const steps = sample(
        fc.oneof(
          { weight: 4, arbitrary: goodIds.map((id) => valid(id)) },
          { weight: 1, arbitrary: goodIds.map((id) => bin(encode({ t: 'cancel', id }))) },
        ),
        150,
        10 + c,
      );
      all.push(script(`collide-${c}`, steps));
    }
    const churnFrames = sample(goodIds.map((id) => encode({ t: 'infer', id, model: 'iris', inputs: irisInput([6.3, 2.5, 4.9, 1.5]) })), 30, 20);
    const frameCount = all.reduce((n, s) => n + s.steps.length, 0) + 40 * churnFrames.length;

    // Everything hostile is generated above, before the good client starts: generating blocks this event loop, which is the node's too.
    const started = performance.now();
    const good = await GoodClient.start(fz.node.url, 'good');
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const [outcomes] = await Promise.all([
      pool(6, all.map((s) => () => runScript(fz.node.url, s))),
      pool(2, Array.from({ length: 40 }, (_, i) => () => churn(fz.node.url, churnFrames, i))),
    ]);
    loop.disable();
    const report = await good.finish();
    const hostileMs = performance.now() - started;

    const problems = outcomes.flatMap(judge);
    expect(problems.slice(0, 20), seeded(`${problems.length} hostile connections broke the contract`)).toEqual([]);
    expect(frameCount, 'hostile frames sent').toBeGreaterThan(2000);
    expect(outcomes.filter((o) => o.script.expectClose === 1007).length, seeded('connections closed 1007')).toBeGreaterThan(50);

    // The good client: every answer, right, once, and no long silence.
    expect(report.sent, seeded('the good client made progress')).toBeGreaterThan(30);
    expect(
      { results: report.results, errors: report.errors, duplicates: report.duplicates, lost: report.lost, foreign: report.foreign, wrong: report.wrong },
      seeded('good client'),
    ).toEqual({ results: report.sent, errors: {}, duplicates: 0, lost: 0, foreign: 0, wrong: 0 });
    expect(report.rows).toBe(3);
    // Loose: hostile clients share this process and its two cores with the node; a hang would be far longer.
    expect(report.maxGapMs, seeded('longest wait for a good result')).toBeLessThan(5_000);
    expect(loop.max / 1e6, seeded('worst event-loop stall (ms)')).toBeLessThan(2_000);

    // Nothing left behind by connections that vanished with requests in flight.
    const until = performance.now() + 5_000;
    while (fz.node.outstanding !== 0 && performance.now() < until) await sleep(20);
    expect(fz.node.outstanding, 'requests still outstanding').toBe(0);
    const stats = await fz.node.batcherStats('iris');
    expect({ queued: stats.queued, running: stats.running }).toEqual({ queued: 0, running: 0 });
    expect(fz.node.queuedBytes).toBe(0);

    // Up, responsive, nothing crashed, nothing polluted.
    expect((await fetch(`http://127.0.0.1:${fz.node.port}/v2/health/live`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${fz.node.port}/v2/health/ready`)).status).toBe(200);
    const after = await GoodClient.start(fz.node.url, 'after');
    await sleep(200);
    const afterReport = await after.finish();
    expect({ ok: afterReport.results === afterReport.sent && afterReport.sent > 0, wrong: afterReport.wrong }).toEqual({ ok: true, wrong: 0 });
    expect(fz.actorFaults.faults(), 'actors that crashed').toEqual([]);
    expect(fz.logs.lines().filter((l) => Number(l['level']) >= 50 || /worker crashed/.test(String(l['msg']))), 'error logs').toEqual([]);
    expect(prototypeChanges(fz.protos, snapshotPrototypes())).toEqual([]);
    expect(hostileMs, 'fuzz phase time').toBeLessThan(40_000);
    console.info(`node fuzz: seed ${SEED}, ${frameCount} hostile frames on ${outcomes.length + 40} connections, good client ${report.sent} requests, worst stall ${Math.round(loop.max / 1e6)} ms, ${Math.round(hostileMs)} ms`);
  });
});
