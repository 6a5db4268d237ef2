/**
 * Peak traffic against a real node process: 3× its capacity with mixed
 * priorities, a client that stops reading, and HTTP callers sharing a full
 * queue.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest } from 'node:http';
import { PRIORITIES, type ErrorFrame, type Priority, type ResultFrame } from '../../src/transport/protocol.js';
import { RawClient } from '../helpers/RawClient.js';
import { expectEveryResult, IrisLoad } from '../helpers/load.js';
import { eventually } from '../helpers/cluster.js';
import { metric, metricSum } from '../helpers/metrics.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

const started: NodeProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((n) => n.stop('SIGKILL')));
});

const IMG = 3 * 48 * 192;
const image = new Uint8Array(new Float32Array(IMG).fill(0.25).buffer);
const imageInfer = (id: string, priority: Priority) => ({ t: 'infer', id, model: 'text-orientation', priority, inputs: { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: image } } });

/** `actorserve_requests_shed_total` of text-orientation by priority, summed over its reasons. */
async function shedByPriority(port: number): Promise<Record<Priority, number>> {
  const out = { high: 0, normal: 0, low: 0 };
  for (const p of PRIORITIES) out[p] = await metricSum(port, 'actorserve_requests_shed_total', `model="text-orientation",priority="${p}"`);
  return out;
}

const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

describe('three times more traffic than capacity', () => {
  it('answers every request exactly once, serves all high priority, refuses the rest with retryAfterMs, stays within its memory budget and keeps serving', async () => {
    // Roomy enough that the queue limit binds first (48 + a batch of 16 at 110 KiB each is about 7 MiB):
    // shedding under the budget itself is covered by the batcher tests; here RSS and the gauge must stay under it.
    const budget = 16 * 1024 * 1024;
    // The expected-wait bound is raised from 250 ms (high: 500) to 1 s: its drain estimate counts the
    // event loop's delays, and on a CI box starved by this very flood it reached 530 ms for high work
    // and refused a few high requests. The queue limit and the memory budget still bind here.
    const node = await spawnNode(['--port', '0', '--node-id', 'peak', '--models', 'text-orientation', '--max-queue', '48', '--max-queued-bytes', String(budget), '--max-in-flight', '8192', '--max-queue-delay-ms', '1000']);
    started.push(node);

    // Capacity, measured closed-loop on this machine in this run.
    const probe = await RawClient.connect(node.url);
    const t0 = performance.now();
    let done = 0;
    await new Promise<void>((resolve) => {
      let sent = 0;
      const next = () => {
        if (performance.now() - t0 > 2_000) return void (done === sent && resolve());
        const id = `c${sent++}`;
        void probe.request(imageInfer(id, 'normal')).then(() => (done++, next()));
      };
      for (let i = 0; i < 32; i++) next();
    });
    const capacity = done / ((performance.now() - t0) / 1000);
    probe.close();
    expect(capacity).toBeGreaterThan(0);

    const shedBefore = await shedByPriority(node.port);

    // Open loop at 3× capacity for 4 s over two connections: 4 % high (well under capacity even if the
    // machine slows down), 36 % low, the rest normal.
    const clients = [await RawClient.connect(node.url), await RawClient.connect(node.url)];
    const rate = 3 * capacity;
    const sent: { client: RawClient; id: string; priority: Priority }[] = [];
    let maxQueuedBytes = 0;
    let maxRss = 0;
    const sampler = setInterval(() => {
      void metric(node.port, 'actorserve_queued_bytes').then((b) => (maxQueuedBytes = Math.max(maxQueuedBytes, b || 0)));
      maxRss = Math.max(maxRss, rssBytes(node.proc.pid!));
    }, 50);
    const start = performance.now();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        const elapsed = performance.now() - start;
        if (elapsed > 4_000) {
          clearInterval(tick);
          return resolve();
        }
        while (sent.length < (elapsed / 1000) * rate) {
          const n = sent.length;
          const priority: Priority = n % 25 === 0 ? 'high' : n % 25 < 10 ? 'low' : 'normal';
          const client = clients[n % 2]!;
          const id = `o${n}`;
          sent.push({ client, id, priority });
          client.send(imageInfer(id, priority));
        }
      }, 5);
    });
    const replies = await Promise.all(sent.map((s) => s.client.reply(s.id, 30_000)));
    clearInterval(sampler);
    await new Promise((r) => setTimeout(r, 200));

    const byPriority: Record<Priority, { ok: number; refused: number }> = { high: { ok: 0, refused: 0 }, normal: { ok: 0, refused: 0 }, low: { ok: 0, refused: 0 } };
    sent.forEach((s, i) => {
      expect(s.client.replies.get(s.id), s.id).toHaveLength(1);
      const f = replies[i] as ResultFrame | ErrorFrame;
      if (f.t === 'result') byPriority[s.priority].ok++;
      else {
        expect(f.code, `${s.id}: ${f.message}`).toBe('overloaded');
        expect(f.retryAfterMs, s.id).toBeGreaterThan(0);
        byPriority[s.priority].refused++;
      }
    });
    for (const c of clients) expect([...c.replies.keys()].every((id) => sent.some((s) => s.client === c && s.id === id))).toBe(true);
    const highRefusals = sent.flatMap((s, i) => (s.priority === 'high' && replies[i]!.t === 'error' ? [(replies[i] as ErrorFrame).message] : []));
    expect(highRefusals.slice(0, 3)).toEqual([]);
    expect(byPriority.high.ok).toBeGreaterThan(0);
    expect(byPriority.low.refused + byPriority.normal.refused).toBeGreaterThan(0);
    // Low is shed before normal.
    expect(byPriority.low.refused / (byPriority.low.ok + byPriority.low.refused)).toBeGreaterThanOrEqual(byPriority.normal.refused / (byPriority.normal.ok + byPriority.normal.refused));
    expect(maxQueuedBytes).toBeLessThanOrEqual(budget);
    expect(maxRss).toBeLessThan(1024 * 1024 * 1024);
    // Every overloaded answer is counted once, under its priority, with a reason.
    const shedAfter = await shedByPriority(node.port);
    for (const p of PRIORITIES) expect(shedAfter[p] - shedBefore[p], p).toBe(byPriority[p].refused);

    // It keeps serving afterwards.
    const after = await clients[0]!.request(imageInfer('after', 'normal'));
    expect(after.t).toBe('result');
    for (const c of clients) c.close();
  });
});

describe('a client that stops reading', () => {
  it('is closed at the high watermark while a well-behaved client on the same node sees every result', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'slow', '--models', 'iris', '--max-buffered-bytes', '65536']);
    started.push(node);
    const good = await RawClient.connect(node.url);
    const load = new IrisLoad(good, { window: 64, maxRequests: 50_000, maxMs: 30_000, prefix: 'good' });

    const slow = await RawClient.connect(node.url);
    slow.ws.pause(); // reads nothing from here on
    let closed = false;
    void slow.closed.then(() => (closed = true));
    const row = new Uint8Array(Float32Array.of(5.1, 3.5, 1.4, 0.2).buffer);
    const until = performance.now() + 25_000;
    for (let i = 0; !closed && i < 400_000 && performance.now() < until; i++) {
      slow.send({ t: 'infer', id: i, model: 'iris', inputs: { input: { dtype: 'float32', shape: [1, 4], data: row } } });
      if (i % 500 === 499) {
        await new Promise((r) => setTimeout(r, 1));
        // A terminated socket surfaces its close once we read again.
        if (slow.ws.readyState !== slow.ws.OPEN) break;
      }
      if (i % 20_000 === 19_999 && node.lines.some((l) => (l as { msg?: string }).msg === 'slow consumer closed at the high watermark')) break;
    }
    // What was sent may still be in the client's own socket buffer (the node reads a flooding client at its own pace).
    await eventually(async () => node.lines.some((l) => (l as { msg?: string }).msg === 'slow consumer closed at the high watermark'), 30_000, 50);
    slow.ws.resume();
    await Promise.race([slow.closed, new Promise((r) => setTimeout(r, 5_000))]);
    expect(slow.ws.readyState).toBe(slow.ws.CLOSED);
    expect(await metric(node.port, 'actorserve_client_connections_closed_total', 'reason="slow_reader"')).toBe(1);

    load.stop();
    const report = await load.done;
    expectEveryResult(report, 101);
    good.close();
  });
});

/** Where an HTTP request comes from: a local address to dial from, and what a proxy would forward in X-Forwarded-For. */
interface Origin {
  localAddress: string;
  forwardedFor?: string;
}

/** Sends one iris row over HTTP from `from`; resolves with the status and the body's error. */
function postIris(port: number, from: Origin, id: string, sent?: (req: ClientRequest) => void) {
  return new Promise<{ status: number; error: string | undefined }>((resolve, reject) => {
    const body = JSON.stringify({ id, inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [5.1, 3.5, 1.4, 0.2] }] });
    const req = httpRequest({
      host: '127.0.0.1', port, path: '/v2/models/iris/infer', method: 'POST', localAddress: from.localAddress, agent: false,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(from.forwardedFor ? { 'x-forwarded-for': from.forwardedFor } : {}) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c)).on('end', () => resolve({ status: res.statusCode!, error: (JSON.parse(text) as { error?: string }).error }));
    });
    req.on('error', reject).end(body);
    sent?.(req);
  });
}

/**
 * A node serving iris one row per batch, one batch at a time, with no queue-delay bound (only the
 * queue cap, 8, soft limit 6, and the shares decide), whose worker's next run hangs until the
 * watchdog ends it (6 s): everything sent after it waits in the queue.
 */
async function nodeWithHungWorker(id: string, extraArgs: string[] = []) {
  const token = `${id}-admin-token`;
  const node = await spawnNode(['--port', '0', '--node-id', id, '--models', 'iris', '--max-queue', '8', '--max-batch', '1', '--pipeline', '1', '--max-queue-delay-ms', '0', '--run-timeout-ms', '6000', '--chaos', '--admin-token', token, ...extraArgs]);
  started.push(node);
  const chaos = await fetch(`http://127.0.0.1:${node.port}/v1/admin/chaos`, { method: 'POST', body: JSON.stringify({ fault: 'hangWorker', model: 'iris' }), headers: { authorization: `Bearer ${token}` } });
  expect(chaos.status).toBe(200);
  const gauge = (name: string) => metric(node.port, name, 'model="iris"').then((n) => n || 0);
  const stuck = postIris(node.port, { localAddress: '127.0.0.3' }, 'stuck');
  await eventually(async () => (await gauge('actorserve_in_flight')) === 1, 5_000, 20);
  return { node, gauge, stuck };
}

describe('HTTP callers under pressure', () => {
  it.each([
    { how: 'from their own addresses', args: [], a: { localAddress: '127.0.0.1' }, b: { localAddress: '127.0.0.2' } },
    // Both through one proxy on 127.0.0.1: counted by the addresses it forwards.
    { how: 'through a trusted proxy', args: ['--trusted-proxies', '127.0.0.1'], a: { localAddress: '127.0.0.1', forwardedFor: '198.51.100.1' }, b: { localAddress: '127.0.0.1', forwardedFor: '198.51.100.2' } },
  ])('hold a share of the model queue per address ($how): one flooding address is refused past its share while another still gets in', async ({ args, a: fromA, b: fromB }) => {
    const { node, gauge, stuck } = await nodeWithHungWorker('share', args);
    const post = (from: Origin, id: string) => postIris(node.port, from, id);
    const b1 = post(fromB, 'b1');
    await eventually(async () => (await gauge('actorserve_queue_depth')) === 1, 5_000, 20);
    const answeredA: { status: number; error: string | undefined }[] = [];
    const a = Array.from({ length: 12 }, (_, i) => post(fromA, `a${i}`).then((r) => (answeredA.push(r), r)));
    // Every one of a's requests is either answered or queued.
    await eventually(async () => answeredA.length + (await gauge('actorserve_queue_depth')) - 1 === 12, 5_000, 20);
    // Past the soft limit (6) two addresses hold ⌈8 / 2⌉ = 4 each at most: a got 5 in (the fifth while under the soft limit).
    expect(await gauge('actorserve_queue_depth')).toBe(6);
    expect(answeredA).toHaveLength(7);
    for (const r of answeredA) {
      expect(r.status).toBe(429);
      expect(r.error).toMatch(/share of the model queue/);
    }
    // b holds one: it is still let in, where one share for every HTTP caller would have refused it.
    const b2 = post(fromB, 'b2');
    await eventually(async () => (await gauge('actorserve_queue_depth')) === 7, 5_000, 20);

    // The watchdog ends the hung run and the queue drains: every queued request is answered 200.
    const queuedA = (await Promise.all(a)).filter((r) => r.status === 200);
    expect(queuedA).toHaveLength(5);
    expect((await b1).status).toBe(200);
    expect((await b2).status).toBe(200);
    expect([200, 500]).toContain((await stuck).status);
  }, 60_000);

  it('cancels the queued request of a caller that goes away: it leaves the queue at once, answered cancelled', async () => {
    const { node, gauge, stuck } = await nodeWithHungWorker('gone');
    void stuck.catch(() => undefined); // the node is stopped with it still hung
    let sent: ClientRequest | undefined;
    const gone = postIris(node.port, { localAddress: '127.0.0.1' }, 'gone', (r) => (sent = r)).catch((e: Error) => e);
    await eventually(async () => (await gauge('actorserve_queue_depth')) === 1, 5_000, 20);
    sent!.destroy();
    expect(await gone).toBeInstanceOf(Error);
    // Well before the watchdog (6 s) frees the worker, the request is out of the queue.
    await eventually(async () => (await gauge('actorserve_queue_depth')) === 0, 3_000, 20);
    expect(await metric(node.port, 'actorserve_requests_total', 'code="cancelled"')).toBe(1);
  }, 30_000);
});
