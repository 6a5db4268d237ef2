/**
 * Fuzzing the peer endpoint (`/cluster`) of a real node in this process,
 * while a well-behaved client streams iris requests the whole time.
 *
 * Before the handshake, anything but a hello with a fresh, valid proof is
 * refused with 1008 and a `peer refused` log line, and leaves no trace in
 * the membership. After a correct handshake (proof computed from the known
 * secret), malformed envelopes of every shape must neither crash nor stall
 * the node, nor reach the good client.
 *
 * Replay a run with FUZZ_SEED=<seed> (printed in every failure message).
 */
import fc from 'fast-check';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { encode } from '../../src/transport/codec.js';
import { decodePeer } from '../../src/transport/peerCodec.js';
import { PEER_PROTOCOL_VERSION, newNonce, proof, type ChallengeFrame, type HelloFrame, type MemberInfo } from '../../src/transport/peerProtocol.js';
import { f32 } from '../helpers/RawClient.js';
import { GoodClient, pool, sleep, waitFor, useFuzzNode } from './harness.js';
import { PACKERS, own, packPlain, prototypeChanges, snapshotPrototypes, valueArb } from './hostile.js';

const SEED = Number(process.env['FUZZ_SEED'] ?? Math.floor(Math.random() * 0x7fffffff));
const seeded = (what: string) => `${what} (FUZZ_SEED=${SEED})`;
const sample = <T>(arb: fc.Arbitrary<T>, n: number, salt: number): T[] => fc.sample(arb, { seed: SEED + salt, numRuns: n });

const SECRET = 'fuzz-secret';
const CLUSTER = 'actorserve';

const fz = useFuzzNode('info', SECRET);

/** One connection to /cluster: its challenge, the frames after it, and how it closed. */
interface PeerConn {
  ws: WebSocket;
  challenge: ChallengeFrame;
  /** Our side's port: the node logs the remote as host:port. */
  port: number;
  frames: unknown[];
  closed: Promise<{ code: number; reason: string }>;
}

async function dial(): Promise<PeerConn> {
  const ws = new WebSocket(`ws://127.0.0.1:${fz.node.port}/cluster`, { perMessageDeflate: false, maxPayload: 64 * 2 ** 20 });
  let port = 0;
  ws.on('upgrade', (res) => void (port = res.socket.localPort ?? 0));
  ws.on('error', () => undefined);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  const frames: unknown[] = [];
  let first = true;
  const challenge = await new Promise<ChallengeFrame>((resolve, reject) => {
    ws.on('message', (d: Buffer) => {
      const f = decodePeer(d);
      if (first) resolve(f as ChallengeFrame);
      else frames.push(f);
      first = false;
    });
    void closed.then(() => reject(new Error('closed before the challenge')));
  });
  return { ws, challenge, port, frames, closed };
}

const member = (nodeId: string, addr = '127.0.0.1:1'): MemberInfo => ({ nodeId, incarnation: Date.now() * 1000, addr, models: ['iris'], state: 'up' });

/** A hello that the node must accept: the proof covers its fresh nonce. */
const goodHello = (c: ChallengeFrame, m: MemberInfo, secret = SECRET): HelloFrame => ({
  t: 'hello',
  protocol: PEER_PROTOCOL_VERSION,
  cluster: CLUSTER,
  member: m,
  nonce: newNonce(),
  proof: proof(secret, 'dialer', c.nonce, CLUSTER, m.nodeId, c.nodeId),
});

const refusedLines = () => fz.logs.lines().filter((l) => l['msg'] === 'peer refused');

/** Sends `frame` before any handshake; the node must close with 1008 and log the refusal for this connection. */
async function expectRefused(name: string, frame: (c: ChallengeFrame) => Uint8Array | string): Promise<string[]> {
  const c = await dial();
  const data = frame(c.challenge);
  c.ws.send(data, { binary: typeof data !== 'string' });
  const close = await Promise.race([c.closed, sleep(3_000).then(() => undefined)]);
  c.ws.terminate();
  const bad: string[] = [];
  if (close?.code !== 1008) bad.push(`${name}: closed with ${close?.code ?? 'nothing'} (${close?.reason ?? ''}), wanted 1008`);
  if (c.frames.length > 0) bad.push(`${name}: got ${c.frames.length} frames after the challenge`);
  const logged = refusedLines().some((l) => String(l['remote']).endsWith(`:${c.port}`));
  if (!logged) bad.push(`${name}: no 'peer refused' log line for port ${c.port}`);
  return bad;
}

/** A node's outbound link dialling us: we play the listener, capture its hello, and never accept. */
async function captureListener(nodeId: string): Promise<{ addr: string; hellos: HelloFrame[]; close: () => Promise<void> }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', path: '/cluster' });
  await new Promise((r) => wss.once('listening', r));
  const hellos: HelloFrame[] = [];
  wss.on('connection', (ws) => {
    ws.on('error', () => undefined);
    // The node dials a member it learnt with that member's id in mind: answer as that id.
    ws.send(encode({ t: 'challenge', cluster: CLUSTER, nodeId, incarnation: 1, nonce: newNonce() } satisfies ChallengeFrame));
    ws.once('message', (d: Buffer) => {
      hellos.push(decodePeer(d) as HelloFrame);
      ws.close(1008, 'not today');
    });
  });
  return {
    addr: `127.0.0.1:${(wss.address() as AddressInfo).port}`,
    hellos,
    close: () => {
      for (const c of wss.clients) c.terminate();
      return new Promise((r) => wss.close(() => r()));
    },
  };
}

const tensor = (rows: number, dataRows = rows) => ({ dtype: 'float32', shape: [rows, 4], data: f32(Array.from({ length: dataRows * 4 }, (_, i) => i / 10)) });

/** The envelope shapes a broken or hostile authenticated peer may send, many of them aimed at the good client's session. */
function hostileEnvelopes(inc: number, goodSeqs: readonly number[]): unknown[] {
  const key = (n: number, session = 'session-0') => `fz/${inc}/${session}/${n}`;
  const env = (msg: unknown) => ({ to: 'router', from: 'evil', msg });
  const req = (over: Record<string, unknown>) => ({
    key: `evil/1/s/${Math.random()}`,
    id: 'x',
    model: 'iris',
    version: '1',
    inputs: { input: tensor(1) },
    rows: 1,
    bucket: '4;',
    priority: 'normal',
    remainingMs: null,
    attempts: 0,
    ...over,
  });
  const out: unknown[] = [
    null, 5, 'str', [], {}, { to: 'router' }, { msg: null }, { msg: 5 }, { msg: 'hb' }, { msg: [] },
    env({}), env({ t: 5 }), env({ t: null }), env({ t: 'nope' }), env({ t: 'hb' }), env({ t: '__proto__' }), env({ t: 'constructor' }),
    // Gossip that is not a member list, or members that are not members.
    ...[null, 5, 'x', [null], [5], ['x'], [{}], [{ nodeId: 5 }], [{ nodeId: null, addr: null }], [{ nodeId: 'ghost' }]].map((view) => env({ t: 'hb', state: 'up', view, load: {} })),
    // Members whose address is no address: dialling them must not throw inside the message handler.
    ...['a b', '[', '', '::::', 'x'.repeat(10_000), '127.0.0.1:99999', 'host:port', 'http://x/', '\u0000'].map((addr, i) =>
      env({ t: 'hb', state: 'up', view: [{ nodeId: `ghost-${i}`, incarnation: Date.now(), addr, models: ['iris'], state: 'up' }], load: {} }),
    ),
    ...[null, 5, 'x', [], { iris: 'lots' }, { iris: -1 }, { iris: 1e308 }, { iris: null }, own([['__proto__', { polluted: 1 }]])].map((load) => env({ t: 'hb', state: 'up', view: [], load })),
    ...[null, 5, 'down', 'suspect', {}].map((state) => env({ t: 'hb', state, view: [], load: {} })),
    ...[null, 'iris', [null], [5], [{}], ['x'.repeat(1000)]].map((models) => env({ t: 'hb', state: 'up', models, view: [], load: {} })),
    // Requests that are not requests.
    ...[undefined, null, 5, 'x', [], {}].map((r) => env({ t: 'infer', req: r })),
    ...[
      { key: 5 }, { key: null }, { key: {} }, { key: [] }, { id: null }, { id: {} }, { model: null }, { model: 5 }, { model: 'nope' }, { version: null }, { version: 2 },
      { inputs: null }, { inputs: 5 }, { inputs: [] }, { inputs: {} }, { inputs: { input: null } }, { inputs: { input: 5 } }, { inputs: { input: { dtype: 'float32', shape: [1, 4], data: 'abc' } } },
      { inputs: { input: { dtype: 'float32', shape: [1, 4], data: new Uint8Array(3) } } }, { inputs: { input: { dtype: 'float64', shape: [1, 4], data: new Uint8Array(32) } } },
      { inputs: { input: { dtype: 'float32', shape: [1, 4, 1], data: new Uint8Array(16) } } }, { inputs: { input: tensor(1), extra: tensor(1) } }, { inputs: { other: tensor(1) } },
      { inputs: { input: { dtype: 'float32', shape: null, data: new Uint8Array(16) } } }, { inputs: { input: { dtype: 'float32', shape: [2 ** 24, 4], data: new Uint8Array(16) } } },
      // Rows that disagree with the data: a batch assembled from it would misalign every other request's rows.
      { rows: 1, inputs: { input: tensor(3) } }, { rows: 3, inputs: { input: tensor(1) } }, { rows: 2, inputs: { input: tensor(1, 2) } },
      { rows: 2 ** 31 }, { rows: 2 ** 53 }, { rows: -1 }, { rows: 0 }, { rows: 0.5 }, { rows: NaN }, { rows: 'x' }, { rows: null }, { rows: 256, inputs: { input: tensor(256) } }, { rows: 257, inputs: { input: tensor(257) } },
      { bucket: null }, { bucket: 5 }, { bucket: 'other' }, { priority: 'urgent' }, { priority: null }, { priority: 5 },
      { remainingMs: 'x' }, { remainingMs: -5 }, { remainingMs: 1e308 }, { remainingMs: NaN }, { remainingMs: {} },
      { attempts: -1 }, { attempts: 'x' }, { attempts: 1e9 }, { attempts: null },
    ].map((over) => env({ t: 'infer', req: req(over) })),
    // Replies that are not replies, many addressed at the good client's requests.
    ...[5, null, {}, [], 'a', '///', '__proto__'].map((k) => env({ t: 'reply', key: k, frame: { t: 'error', id: 'x', code: 'internal', message: 'forged' } })),
    ...goodSeqs.flatMap((n) =>
      [null, 5, 'x', [], {}, { t: 'result', id: `good-${n}` }, { t: 'result', id: `good-${n}`, outputs: null }, { t: 'result', id: `good-${n}`, outputs: {}, timings: null }, { t: 'error', id: `good-${n}` }, { t: 'error', id: `good-${n}`, code: 5, message: null }, { t: 'nope', id: `good-${n}` }].map(
        (frame) => env({ t: 'reply', key: key(n), frame }),
      ),
    ),
    ...[null, 5, 'x'].map((frame) => env({ t: 'reply', key: key(0, 'session-1'), frame })),
    // Cancels and moves that name nothing real.
    ...[[null, null], [5, 5], [{}, {}], ['iris', null], ['iris', 5], ['iris', 'no/such/key'], [null, key(1)]].map(([model, k]) => env({ t: 'cancel', model, key: k })),
    ...[[5, null], [null, 'x'], [{}, []], [key(1), 5], ['no/such/key', 'evil']].map(([k, to]) => env({ t: 'moved', key: k, to })),
  ];
  return out;
}

describe('the peer endpoint under hostile peers', () => {
  it('refuses unauthenticated garbage, malformed hellos, wrong proofs and replayed hellos with 1008 and a log line, and leaves no member behind', async () => {
    const bad: string[] = [];
    const silent = await dial(); // says nothing: refused when the handshake times out (5 s)
    const mallory = (i: number) => member(`mallory-${i}`);

    // Undecodable bytes and text frames.
    const junk = sample(fc.uint8Array({ minLength: 1, maxLength: 64 }).filter((b) => b[0] === 0xc1 || b.length > 1), 25, 1);
    const cases: [string, (c: ChallengeFrame) => Uint8Array | string][] = [
      ...junk.map((b, i) => [`bytes-${i}`, () => b] as [string, () => Uint8Array]),
      ['text', () => 'hello'],
      ['text-json', (c) => JSON.stringify(goodHello(c, mallory(0)))],
      // Arbitrary msgpack values.
      ...sample(fc.tuple(valueArb, fc.nat({ max: PACKERS.length - 1 })), 40, 2).flatMap(([v, p], i) => {
        try {
          const b = new Uint8Array(PACKERS[p]!.pack(v));
          return [[`value-${i}`, () => b] as [string, () => Uint8Array]];
        } catch {
          return [];
        }
      }),
    ];
    // Hellos broken one field at a time.
    const breakages: [string, (h: Record<string, unknown>) => unknown][] = [
      ...['t', 'protocol', 'cluster', 'member', 'nonce', 'proof'].map((k) => [`missing ${k}`, (h: Record<string, unknown>) => ({ ...h, [k]: undefined })] as [string, (h: Record<string, unknown>) => unknown]),
      ['t challenge', (h) => ({ ...h, t: 'challenge' })],
      ['protocol 2', (h) => ({ ...h, protocol: 2 })],
      ['protocol "1"', (h) => ({ ...h, protocol: '1' })],
      ['protocol 1.5', (h) => ({ ...h, protocol: 1.5 })],
      ['other cluster', (h) => ({ ...h, cluster: 'other' })],
      ['long cluster', (h) => ({ ...h, cluster: 'x'.repeat(200) })],
      ['member null', (h) => ({ ...h, member: null })],
      ['member array', (h) => ({ ...h, member: [] })],
      ['member id empty', (h) => ({ ...h, member: { ...(h['member'] as object), nodeId: '' } })],
      ['member id long', (h) => ({ ...h, member: { ...(h['member'] as object), nodeId: 'x'.repeat(65) } })],
      ['member incarnation', (h) => ({ ...h, member: { ...(h['member'] as object), incarnation: -1 } })],
      ['member state', (h) => ({ ...h, member: { ...(h['member'] as object), state: 'down' } })],
      ['member models', (h) => ({ ...h, member: { ...(h['member'] as object), models: [1] } })],
      ['member addr', (h) => ({ ...h, member: { ...(h['member'] as object), addr: '' } })],
      ['proof empty', (h) => ({ ...h, proof: '' })],
      ['proof long', (h) => ({ ...h, proof: 'a'.repeat(129) })],
      ['proof number', (h) => ({ ...h, proof: 7 })],
      ['nonce long', (h) => ({ ...h, nonce: 'n'.repeat(129) })],
    ];
    breakages.forEach(([name, breakIt], i) => cases.push([`hello ${name}`, (c) => packPlain(breakIt(goodHello(c, mallory(100 + i)) as unknown as Record<string, unknown>))]));
    // Well-formed hellos with proofs that are not good for this handshake.
    const wrongProofs: [string, (c: ChallengeFrame, h: HelloFrame) => string][] = [
      ['random hex', () => sample(fc.uint8Array({ minLength: 32, maxLength: 32 }), 1, 3)[0]!.reduce((s, b) => s + b.toString(16).padStart(2, '0'), '')],
      ['wrong secret', (c, h) => proof('not-the-secret', 'dialer', c.nonce, CLUSTER, h.member.nodeId, c.nodeId)],
      ['listener role', (c, h) => proof(SECRET, 'listener', c.nonce, CLUSTER, h.member.nodeId, c.nodeId)],
      ['other nonce', (_c, h) => proof(SECRET, 'dialer', newNonce(), CLUSTER, h.member.nodeId, 'fz')],
      ['our own nonce', (c, h) => proof(SECRET, 'dialer', h.nonce, CLUSTER, h.member.nodeId, c.nodeId)],
      ['swapped ends', (c, h) => proof(SECRET, 'dialer', c.nonce, CLUSTER, c.nodeId, h.member.nodeId)],
      ['for another node', (c) => proof(SECRET, 'dialer', c.nonce, CLUSTER, 'someone-else', c.nodeId)],
      ['other cluster', (c, h) => proof(SECRET, 'dialer', c.nonce, 'other', h.member.nodeId, c.nodeId)],
      ['not hex', () => 'z'.repeat(64)],
      ['truncated', (c, h) => proof(SECRET, 'dialer', c.nonce, CLUSTER, h.member.nodeId, c.nodeId).slice(0, 62)],
      ['upper case tail', (c, h) => `${proof(SECRET, 'dialer', c.nonce, CLUSTER, h.member.nodeId, c.nodeId).slice(0, 63)}G`],
    ];
    wrongProofs.forEach(([name, make], i) =>
      cases.push([`proof ${name}`, (c) => {
        const h = goodHello(c, mallory(200 + i));
        return encode({ ...h, proof: make(c, h) });
      }]),
    );
    // A right proof that claims to be the node itself.
    cases.push(['claims our id', (c) => encode(goodHello(c, member('fz')))]);
    // 16 MiB of map before any handshake: refused unread, not decoded (that took seconds of event loop).
    const keys = Math.floor(((16 << 20) - 5) / 6);
    const wideMap = Buffer.alloc(5 + keys * 6);
    wideMap[0] = 0xdf;
    wideMap.writeUInt32BE(keys, 1);
    for (let i = 0; i < keys; i++) {
      const o = 5 + i * 6;
      wideMap[o] = 0xa4;
      wideMap.write(i.toString(36).padStart(4, '0'), o + 1, 'latin1');
    }
    cases.push(['oversized hello', () => wideMap]);

    // Replays: a hello accepted once, and a hello the node itself sent when it dialled us, each against a fresh challenge.
    const listener = await captureListener('replayer');
    const first = await dial();
    const accepted = goodHello(first.challenge, member('replayer', listener.addr));
    first.ws.send(encode(accepted));
    await waitFor(() => first.frames.length > 0, 3_000, 'accept for a correct hello');
    expect(first.frames[0], 'a correct hello is accepted').toMatchObject({ t: 'accept', proof: proof(SECRET, 'listener', accepted.nonce, CLUSTER, 'fz', 'replayer') });
    await waitFor(() => listener.hellos.length > 0, 5_000, 'the node dialling the new member and sending its hello');
    cases.push(['replayed accepted hello', () => encode(accepted)]);
    cases.push(['replayed hello of the node itself', () => encode(listener.hellos[0]!)]);
    cases.push(['replayed hello of the node, as another id', () => encode({ ...listener.hellos[0]!, member: member('replayer-2') })]);

    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    for (const r of await pool(4, cases.map(([name, f]) => () => expectRefused(name, f)))) bad.push(...r);
    loop.disable();
    expect(loop.max / 1e6, seeded('worst event-loop stall while refusing (ms)')).toBeLessThan(1_000);
    // A right proof with __proto__ keys beside it is accepted as the member it names, and changes no prototype.
    const withProto = await dial();
    const h = goodHello(withProto.challenge, member('proto-keys'));
    withProto.ws.send(packPlain(own([...Object.entries(h), ['__proto__', { polluted: 'yes' }], ['member', own([...Object.entries(h.member), ['__proto__', { nodeId: 'fz' }]])]])));
    await waitFor(() => withProto.frames.length > 0, 3_000, 'accept for a hello with __proto__ keys');
    expect(withProto.frames[0]).toMatchObject({ t: 'accept' });
    withProto.ws.close();
    first.ws.close();
    await listener.close();

    const timedOut = await Promise.race([silent.closed, sleep(8_000).then(() => undefined)]);
    if (timedOut?.code !== 1008) bad.push(`silent: closed with ${timedOut?.code ?? 'nothing'}, wanted 1008 after the handshake timeout`);
    if (!refusedLines().some((l) => String(l['remote']).endsWith(`:${silent.port}`) && l['reason'] === 'handshake timed out')) bad.push('silent: no log line');

    expect(bad, seeded(`${bad.length} refusals went wrong`)).toEqual([]);
    expect(cases.length).toBeGreaterThan(90);
    // Nobody refused became a member; the replayer and proto-keys did (they had right proofs).
    const ids = fz.node.clusterView().map((m) => m.nodeId);
    expect(ids.filter((id) => !['fz', 'replayer', 'proto-keys'].includes(id)), 'members from refused handshakes').toEqual([]);
    expect(fz.actorFaults.faults()).toEqual([]);
    expect(prototypeChanges(fz.protos, snapshotPrototypes())).toEqual([]);
  }, 40_000);

  it('survives malformed envelopes of every shape from an authenticated peer: no crash, no stall, and the good client gets every answer, right, once', async () => {
    const good = await GoodClient.start(fz.node.url, 'good');
    // An authenticated link as 'evil'; an undecodable frame closes it (1007), and we come back with a new handshake.
    const closes: number[] = [];
    const authed = async () => {
      const conn = await dial();
      conn.ws.send(encode(goodHello(conn.challenge, { ...member('evil'), incarnation: 1 })));
      await waitFor(() => conn.frames.length > 0, 3_000, 'accept for the authenticated fuzzer');
      expect(conn.frames[0]).toMatchObject({ t: 'accept' });
      void conn.closed.then((x) => closes.push(x.code));
      return conn;
    };
    let c = await authed();
    const inc = c.challenge.incarnation;
    // Correct proofs for members whose address makes no URL: the node learns them and must not throw dialling them.
    for (const [i, addr] of ['a b', '[', '127.0.0.1:99999', '\u0000'].entries()) {
      const conn = await dial();
      conn.ws.send(encode(goodHello(conn.challenge, member(`bad-addr-${i}`, addr))));
      await waitFor(() => conn.frames.length > 0, 3_000, `accept for a member at ${JSON.stringify(addr)}`);
      conn.ws.close();
    }
    const frames: Uint8Array[] = [];
    // Arbitrary values, and arrays of arbitrary values as envelopes.
    for (const [v, p] of sample(fc.tuple(valueArb, fc.nat({ max: PACKERS.length - 1 })), 300, 10)) {
      for (const value of [v, [v], [{ to: 'router', from: 'evil', msg: v }]]) {
        try {
          frames.push(new Uint8Array(PACKERS[p]!.pack(value)));
        } catch {
          // an encoder that refuses the value
        }
      }
    }
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    let delivered = 0;
    let relinks = 0;
    const sendAll = async (list: readonly Uint8Array[]) => {
      for (const f of list) {
        if (c.ws.readyState !== c.ws.OPEN) {
          c = await authed();
          relinks++;
        }
        c.ws.send(f);
        delivered++;
        await new Promise((r) => setImmediate(r));
      }
    };
    await sendAll(frames);
    const reconnects = closes.length;
    // The envelopes below are all decodable, however wrong: they go over a fresh link that must stay up.
    const before = c;
    c = await authed();
    before.ws.close();
    const relinksBefore = relinks;
    // Aimed at whatever the good client has in flight right now, several times over.
    let sentEnvelopes = 0;
    for (let round = 0; round < 10; round++) {
      const n = good.client.replies.size;
      const envs = hostileEnvelopes(inc, Array.from({ length: 40 }, (_, i) => n - 5 + i).filter((x) => x >= 0));
      sentEnvelopes += envs.length;
      // Each alone (one bad envelope must not hide the others), then all in one frame.
      await sendAll(envs.map((e) => encode([e])));
      await sendAll([encode(envs)]);
      await sleep(50);
    }
    // Volume: one frame of 20 000 heartbeats with nonsense, one of 20 000 nonsense requests.
    const hb = { to: 'membership', from: 'evil', msg: { t: 'hb', state: 'up', view: [{ nodeId: 5 }], load: { iris: 'x' } } };
    const inf = { to: 'router', from: 'evil', msg: { t: 'infer', req: { key: 5, model: 'iris', version: '1', inputs: null, rows: 2 ** 31 } } };
    await sendAll([encode(Array(20_000).fill(hb)), encode(Array(20_000).fill(inf))]);
    sentEnvelopes += 40_000;
    await sleep(300);
    loop.disable();
    // Decodable envelopes, however wrong, never cost the link; undecodable frames closed it, with 1007.
    expect({ relinks: relinks - relinksBefore, open: c.ws.readyState === c.ws.OPEN }, 'the node closed the link over decodable envelopes').toEqual({ relinks: 0, open: true });
    c.ws.close();
    expect(closes.filter((code) => code !== 1007 && code !== 1000 && code !== 1005)).toEqual([]);

    const report = await good.finish();
    expect(
      { results: report.results, errors: report.errors, duplicates: report.duplicates, lost: report.lost, foreign: report.foreign, wrong: report.wrong },
      seeded('good client'),
    ).toEqual({ results: report.sent, errors: {}, duplicates: 0, lost: 0, foreign: 0, wrong: 0 });
    expect(report.sent, seeded('the good client made progress')).toBeGreaterThan(30);
    expect(report.maxGapMs, seeded('longest wait for a good result')).toBeLessThan(5_000);
    expect(loop.max / 1e6, seeded('worst event-loop stall (ms)')).toBeLessThan(2_000);
    expect(sentEnvelopes).toBeGreaterThan(1_000);
    expect(delivered).toBeGreaterThan(frames.length);

    expect((await fetch(`http://127.0.0.1:${fz.node.port}/v2/health/live`)).status).toBe(200);
    const after = await GoodClient.start(fz.node.url, 'after');
    await sleep(200);
    const afterReport = await after.finish();
    expect({ ok: afterReport.results === afterReport.sent && afterReport.sent > 0, wrong: afterReport.wrong }).toEqual({ ok: true, wrong: 0 });
    expect(fz.actorFaults.faults(), 'actors that crashed').toEqual([]);
    const badLogs = fz.logs.lines().filter((l) => Number(l['level']) >= 50 || /worker crashed|gave up|giving up/.test(String(l['msg'])));
    expect(badLogs, 'error logs').toEqual([]);
    expect(fz.node.clusterView().map((m) => m.nodeId)).toContain('fz');
    expect(prototypeChanges(fz.protos, snapshotPrototypes())).toEqual([]);
    console.info(`peer fuzz: seed ${SEED}, ${frames.length} arbitrary frames (${reconnects} closed the link) and ${sentEnvelopes} hostile envelopes, good client ${report.sent} requests, worst stall ${Math.round(loop.max / 1e6)} ms`);
  }, 40_000);
});
