/**
 * Node-wide bounds on clients, against a real node process: how many
 * connections it holds, and how many result bytes all of its clients
 * together may leave unread.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { connect as tcpConnect, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { encode } from '../../src/transport/codec.js';
import { ActorserveError } from '../../src/errors.js';
import { Client } from '../../src/client/Client.js';
import type { ResultFrame } from '../../src/transport/protocol.js';
import { eventually } from '../helpers/cluster.js';
import { expectEveryResult, IrisLoad } from '../helpers/load.js';
import { metric, metricSum } from '../helpers/metrics.js';
import { frameHead, irisInput, RawClient } from '../helpers/RawClient.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

const started: NodeProcess[] = [];
afterAll(async () => {
  await Promise.all(started.map((n) => n.stop('SIGKILL')));
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const logged = (node: NodeProcess, msg: string) => node.lines.filter((l) => (l as { msg?: string }).msg === msg) as Record<string, unknown>[];

describe('a node at its connection cap', () => {
  it('answers a further upgrade 503 with Retry-After (the SDK: overloaded), keeps serving the clients it holds, and takes a new one once one leaves', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'cap', '--models', 'iris', '--max-connections', '2']);
    started.push(node);
    const a = await RawClient.connect(node.url);
    const b = await RawClient.connect(node.url);

    const refused = await Client.connect(node.url, { timeoutMs: 5_000 }).then(
      (c) => (void c.close(), undefined),
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ActorserveError);
    expect(refused).toMatchObject({ code: 'overloaded', retryAfterMs: 1000 });
    expect(await metric(node.port, 'actorserve_client_connections_refused_total', 'reason="max_connections"')).toBe(1);
    expect(await metric(node.port, 'actorserve_client_connections')).toBe(2);

    // The two it holds are served as before.
    for (const [c, id] of [[a, 'a1'], [b, 'b1']] as const) {
      const r = await c.request({ id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) });
      expect(r.t).toBe('result');
    }

    // One leaves; a newcomer gets in.
    a.close();
    await a.closed;
    await eventually(async () => (await metric(node.port, 'actorserve_client_connections')) === 1, 5_000);
    const c = await Client.connect(node.url, { timeoutMs: 5_000 });
    const out = await c.infer('iris', { input: { data: Float32Array.of(6.7, 3.0, 5.2, 2.3), shape: [1, 4] } });
    expect(out.outputs['probabilities']?.data.length).toBe(3);
    await c.close();
    b.close();
  });
});

describe('a remote address at its connection cap', () => {
  it('answers that address\'s further upgrades 503 with Retry-After while another address still gets in, and takes it again once one of its connections leaves', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'peraddr', '--models', 'iris', '--max-connections-per-address', '2']);
    started.push(node);
    const refusedHere = () => metric(node.port, 'actorserve_client_connections_refused_total', 'reason="max_connections_per_address"').then((n) => n || 0);
    // Two loopback addresses: the node listens on 127.0.0.1, and a client may dial it from any 127.x address.
    const a1 = await RawClient.connect(node.url, { localAddress: '127.0.0.1' });
    const a2 = await RawClient.connect(node.url, { localAddress: '127.0.0.1' });
    const refused = await Client.connect(node.url, { timeoutMs: 5_000 }).then(
      (c) => (void c.close(), undefined),
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ActorserveError);
    expect(refused).toMatchObject({ code: 'overloaded', retryAfterMs: 1000 });
    expect(await refusedHere()).toBe(1);

    const b1 = await RawClient.connect(node.url, { localAddress: '127.0.0.2' });
    for (const [c, id] of [[a2, 'a2'], [b1, 'b1']] as const) {
      expect((await c.request({ id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) })).t).toBe('result');
    }
    expect(await metric(node.port, 'actorserve_client_connections')).toBe(3);

    a1.close();
    await a1.closed;
    await eventually(async () => (await metric(node.port, 'actorserve_client_connections')) === 2, 5_000);
    const a3 = await RawClient.connect(node.url, { localAddress: '127.0.0.1' });
    expect((await a3.request({ id: 'a3', model: 'iris', inputs: irisInput([6.7, 3.0, 5.2, 2.3]) })).t).toBe('result');
    expect(await refusedHere()).toBe(1);
    for (const c of [a2, a3, b1]) c.close();
  });
});

describe('clients behind a trusted proxy', () => {
  it('are counted by the address the proxy forwards, and a client that is not a trusted proxy cannot pick its own', async () => {
    // All from 127.0.0.1; only 127.0.0.1 is trusted, so 127.0.0.2 stands for a client reaching the node directly.
    const node = await spawnNode(['--port', '0', '--node-id', 'proxied', '--models', 'iris', '--max-connections-per-address', '1', '--trusted-proxies', '127.0.0.1, 192.0.2.0/24']);
    started.push(node);
    const via = (client: string, localAddress = '127.0.0.1') => RawClient.connect(node.url, { localAddress, headers: { 'x-forwarded-for': client } });
    const refusal = (p: Promise<RawClient>) => p.then((c) => (c.close(), 'connected'), (e: Error) => e.message);
    // Two clients through the proxy: one each, where counting the proxy would have refused the second.
    const c1 = await via('198.51.100.1');
    const c2 = await via('198.51.100.2, 192.0.2.9'); // through a second trusted proxy
    expect(await refusal(via('198.51.100.1'))).toMatch(/503/);
    // Straight from 127.0.0.2: the header is the client's own word and does not count.
    const d1 = await via('198.51.100.3', '127.0.0.2');
    expect(await refusal(via('198.51.100.4', '127.0.0.2'))).toMatch(/503/);
    for (const [c, id] of [[c1, 'c1'], [c2, 'c2'], [d1, 'd1']] as const) {
      expect((await c.request({ id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) })).t).toBe('result');
    }
    expect(await metric(node.port, 'actorserve_client_connections_refused_total', 'reason="max_connections_per_address"')).toBe(2);
    for (const c of [c1, c2, d1]) c.close();
  });

  it('refuses to start with a proxy that is neither an address nor a CIDR block', async () => {
    await expect(spawnNode(['--port', '0', '--models', 'iris', '--trusted-proxies', '10.0.0.0/33'])).rejects.toThrow(/trusted proxy must be an IP address or a CIDR block/);
  });
});

describe('a remote address at its socket cap', () => {
  it('drops that address\'s further TCP connections at accept while another address is served, and takes one again once one of its sockets closes', async () => {
    const node = await spawnNode(['--port', '0', '--node-id', 'sockcap', '--models', 'iris', '--max-sockets-per-address', '3']);
    started.push(node);
    // The test reads metrics from 127.0.0.1: the capped host is 127.0.0.4, the other 127.0.0.5.
    const dial = (localAddress: string) => new Promise<Socket>((resolve, reject) => {
      const s = tcpConnect({ host: '127.0.0.1', port: node.port, localAddress });
      s.once('connect', () => resolve(s)).once('error', reject);
    });
    const live = (localAddress: string) => new Promise<number>((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port: node.port, path: '/v2/health/live', localAddress, agent: false }, (res) => {
        res.resume().on('end', () => resolve(res.statusCode!));
      }).on('error', reject).end();
    });
    // Three sockets that send nothing (a slowloris, or idle keep-alive connections) fill the address's share.
    const held = [await dial('127.0.0.4'), await dial('127.0.0.4'), await dial('127.0.0.4')];
    const fourth = await dial('127.0.0.4');
    fourth.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the fourth socket was not dropped within 3 s')), 3_000);
      fourth.once('close', () => (clearTimeout(timer), resolve()));
    });
    await expect(live('127.0.0.4')).rejects.toThrow();
    expect(await metric(node.port, 'actorserve_client_connections_refused_total', 'reason="max_sockets_per_address"')).toBe(2);

    // Another address is served: HTTP and a WebSocket client.
    expect(await live('127.0.0.5')).toBe(200);
    const other = await RawClient.connect(node.url, { localAddress: '127.0.0.5' });
    expect((await other.request({ id: 'o1', model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) })).t).toBe('result');
    other.close();

    // One of the three closes: the address gets a socket again.
    held[0]!.destroy();
    await eventually(async () => (await live('127.0.0.4').catch(() => 0)) === 200, 5_000, 50);
    for (const s of held) s.destroy();
  });
});

describe('the node-wide budget for unread results', () => {
  it('closes the client holding the most unread results once all of them together pass it, spares the others (under it again) and a reading client alike', async () => {
    // Each connection may hold 8 MiB unread (the default); all of them together 256 KiB. The paused
    // clients answer no ping, and on a slow machine this runs longer than the default interval: no pings.
    const budget = 256 * 1024;
    const node = await spawnNode(['--port', '0', '--node-id', 'unread', '--models', 'iris', '--max-buffered-total-bytes', String(budget), '--client-ping-ms', '0']);
    started.push(node);
    const unread = () => metric(node.port, 'actorserve_client_unread_bytes');

    const good = await RawClient.connect(node.url);
    const load = new IrisLoad(good, { window: 64, maxRequests: 200_000, maxMs: 40_000, prefix: 'good' });

    const bigger = await RawClient.connect(node.url);
    const smaller = await RawClient.connect(node.url);
    bigger.ws.pause();
    smaller.ws.pause();
    const row = irisInput([5.1, 3.5, 1.4, 0.2]);
    const sent = new Map<RawClient, string[]>([[bigger, []], [smaller, []]]);
    const send = (c: RawClient, n: number) => {
      for (let i = 0; i < n; i++) {
        const id = `${c === bigger ? 'B' : 's'}${sent.get(c)!.length}`;
        sent.get(c)!.push(id);
        c.send({ t: 'infer', id, model: 'iris', inputs: row });
      }
    };
    /**
     * Waits until the node has answered everything the paused clients sent (its answers to the
     * reading client that are still on their way, at most its window, count as theirs): what they
     * hold then stays put, however far behind a loaded machine runs.
     */
    const settle = () => {
      const slowSent = sent.get(bigger)!.length + sent.get(smaller)!.length;
      return eventually(async () => (await metricSum(node.port, 'actorserve_requests_total', 'model="iris"')) - good.replies.size >= slowSent, 20_000, 10);
    };
    /**
     * Sends in steps until the node holds `until` unread bytes: big steps while the kernel's
     * socket buffers fill (nothing reaches the node's own buffers yet), small ones after, so no
     * step adds more than ~50 KiB the node must hold.
     */
    const fill = async (c: RawClient, base: number, until: (bytes: number) => boolean) => {
      const deadline = performance.now() + 20_000;
      for (;;) {
        const bytes = await unread();
        if (until(bytes)) return bytes;
        if (performance.now() > deadline) throw new Error(`unread bytes stayed at ${bytes}`);
        send(c, bytes - base < 8 * 1024 ? 250 : 50);
        await settle();
      }
    };

    // One client leaves well over half of the budget unread, alone under it.
    const first = await fill(bigger, 0, (bytes) => bytes >= 0.6 * budget);
    expect(first).toBeLessThanOrEqual(budget);
    await sleep(300);
    const closedAtBudget = () => logged(node, "slow consumer closed at the node's unread-output budget");
    expect(closedAtBudget()).toEqual([]);
    const held = await unread();

    // A second one pushes the total past the budget while holding less than the first. The node's sweep
    // may close the first before this reads the total back: sending more then would push the second alone
    // past the budget.
    await fill(smaller, held, (bytes) => bytes > budget || closedAtBudget().length > 0);
    await eventually(async () => closedAtBudget().length > 0, 5_000);
    await sleep(300);
    const closed = closedAtBudget();
    expect(closed).toHaveLength(1);
    expect(closed[0]!['heldBytes']).toBeGreaterThanOrEqual(held * 0.9);
    expect(closed[0]!['heldBytes']).toBeLessThan(8 * 1024 * 1024); // its own watermark was far off
    expect(closed[0]!['totalBytes']).toBeGreaterThan(budget);
    expect(await metric(node.port, 'actorserve_client_connections_closed_total', 'reason="node_unread_budget"')).toBe(1);

    // The one that held the most is gone; the other reads again and has every answer, once.
    bigger.ws.resume();
    await bigger.closed;
    smaller.ws.resume();
    const ids = sent.get(smaller)!;
    await eventually(async () => ids.every((id) => smaller.replies.has(id)), 20_000);
    for (const id of ids) {
      const replies = smaller.replies.get(id)!;
      expect(replies).toHaveLength(1);
      expect((replies[0] as ResultFrame).t).toBe('result');
    }
    expect(smaller.ws.readyState).toBe(smaller.ws.OPEN);
    expect(await unread()).toBeLessThan(budget);

    load.stop();
    const report = await load.done;
    expectEveryResult(report, 101);
    smaller.close();
    good.close();
  });
});

const socketOf = (c: RawClient) => (c.ws as unknown as { _socket: Socket })._socket;

describe('the node-wide budget for frames still arriving', () => {
  it('closes the client holding the most bytes of unfinished frames once all of them together pass it; the others finish their frames and are answered', async () => {
    const budget = 1024 * 1024;
    const node = await spawnNode(['--port', '0', '--node-id', 'recv', '--models', 'iris', '--max-frame-bytes', String(4 * 1024 * 1024), '--max-receiving-bytes', String(budget)]);
    started.push(node);
    const receiving = () => metric(node.port, 'actorserve_client_receiving_bytes');
    const msg = "client closed at the node's budget for frames and bodies still arriving";

    const good = await RawClient.connect(node.url);
    const load = new IrisLoad(good, { window: 64, maxRequests: 200_000, maxMs: 40_000, prefix: 'good' });

    // Three clients start frames: one declares 3 MiB, two a few hundred KiB, and each stops partway.
    const big = await RawClient.connect(node.url);
    const rows = 16_384; // 256 KiB of float32 iris rows: a frame of ~256 KiB that the node answers
    const frameOf = (id: string) => encode({ t: 'infer', id, model: 'iris', inputs: { input: { dtype: 'float32', shape: [rows, 4], data: new Uint8Array(rows * 16) } } });
    const partial = await Promise.all(['p1', 'p2'].map(async (id) => ({ id, c: await RawClient.connect(node.url), bytes: frameOf(id) })));
    socketOf(big).write(Buffer.concat([frameHead(3 * 1024 * 1024), Buffer.alloc(600 * 1024)]));
    await eventually(async () => (await receiving()) >= 600 * 1024, 5_000);
    for (const p of partial) socketOf(p.c).write(Buffer.concat([frameHead(p.bytes.byteLength), p.bytes.subarray(0, 250 * 1024)]));
    // 600 + 2 × 250 KiB is past 1 MiB: the 600 KiB one goes, and only it.
    await eventually(async () => logged(node, msg).length > 0, 5_000);
    await big.closed;
    await new Promise((r) => setTimeout(r, 300));
    const closed = logged(node, msg);
    expect(closed).toHaveLength(1);
    expect(closed[0]!['heldBytes']).toBeGreaterThanOrEqual(600 * 1024);
    expect(closed[0]!['totalBytes']).toBeGreaterThan(budget);
    expect(await metric(node.port, 'actorserve_client_connections_closed_total', 'reason="node_receiving_budget"')).toBe(1);
    expect(await receiving()).toBeLessThanOrEqual(budget);

    // The others finish their frames and get their answers.
    for (const p of partial) socketOf(p.c).write(p.bytes.subarray(250 * 1024));
    for (const p of partial) {
      const reply = await p.c.reply(p.id, 10_000);
      expect(reply.id).toBe(p.id);
      expect(p.c.ws.readyState).toBe(p.c.ws.OPEN);
      p.c.close();
    }

    load.stop();
    const report = await load.done;
    expectEveryResult(report);
    good.close();
  });
});

describe('HTTP bodies still arriving', () => {
  it('count against the same budget: the request holding the most is cut off, and a WebSocket client mid-frame finishes and is answered', async () => {
    const budget = 1024 * 1024;
    const node = await spawnNode(['--port', '0', '--node-id', 'body', '--models', 'iris', '--max-receiving-bytes', String(budget)]);
    started.push(node);
    const receiving = () => metric(node.port, 'actorserve_client_receiving_bytes');
    const msg = "client closed at the node's budget for frames and bodies still arriving";

    // An HTTP infer call declares 3 MB and sends 800 KiB of it (JSON whitespace), then stalls.
    const http = tcpConnect({ host: '127.0.0.1', port: node.port });
    await new Promise<void>((resolve, reject) => http.once('connect', resolve).once('error', reject));
    const httpClosed = new Promise<void>((resolve) => http.once('close', () => resolve()));
    http.on('error', () => undefined);
    http.write(`POST /v2/models/iris/infer HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: ${3_000_000}\r\n\r\n`);
    http.write(Buffer.alloc(800 * 1024, 0x20));
    await eventually(async () => (await receiving()) >= 800 * 1024, 5_000);

    // A WebSocket client sends 300 KiB of a frame: 1.1 MiB together, past the budget.
    const ws = await RawClient.connect(node.url);
    const rows = 32_768;
    const frame = encode({ t: 'infer', id: 'w', model: 'iris', inputs: { input: { dtype: 'float32', shape: [rows, 4], data: new Uint8Array(rows * 16) } } });
    socketOf(ws).write(Buffer.concat([frameHead(frame.byteLength), frame.subarray(0, 300 * 1024)]));
    await httpClosed;
    // The node's log line reaches this process through a pipe, maybe after the socket's close.
    await eventually(async () => logged(node, msg).length > 0, 5_000);
    const closed = logged(node, msg);
    expect(closed).toHaveLength(1);
    expect(closed[0]).toMatchObject({ url: '/v2/models/iris/infer' });
    expect(closed[0]!['heldBytes']).toBeGreaterThanOrEqual(800 * 1024);
    expect(await metric(node.port, 'actorserve_client_connections_closed_total', 'reason="node_receiving_budget"')).toBe(1);

    socketOf(ws).write(frame.subarray(300 * 1024));
    const reply = await ws.reply('w', 10_000);
    expect(reply.id).toBe('w');
    expect(ws.ws.readyState).toBe(ws.ws.OPEN);
    expect(await receiving()).toBe(0);
    ws.close();
  });
});

describe('clients that answer no ping', () => {
  it('closes a client that neither answers a ping nor sends a frame by the next one, and keeps every client that does either', async () => {
    const pingMs = 300;
    const node = await spawnNode(['--port', '0', '--node-id', 'ping', '--models', 'iris', '--client-ping-ms', String(pingMs)]);
    started.push(node);
    const timedOut = () => metric(node.port, 'actorserve_client_connections_closed_total', 'reason="ping_timeout"').then((n) => n || 0);
    const row = irisInput([5.1, 3.5, 1.4, 0.2]);
    const gone = await RawClient.connect(node.url);
    const idle = await RawClient.connect(node.url);
    // Never answers a ping: only its frames, one every half interval until told to stop, show it is there.
    const quiet = await RawClient.connect(node.url, { autoPong: false });
    let quietSends = true;
    const quietLoop = (async () => {
      for (let i = 0; quietSends && i < 200; i++) {
        expect((await quiet.request({ id: `q${i}`, model: 'iris', inputs: row })).t).toBe('result');
        await sleep(pingMs / 2);
      }
    })();

    expect((await gone.request({ id: 'g1', model: 'iris', inputs: row })).t).toBe('result');
    // A peer that vanished (no FIN, nothing read): its socket stops being read, so the node's pings go unanswered.
    gone.ws.pause();
    await eventually(async () => (await timedOut()) === 1, 5_000, 50);
    await eventually(async () => (await metric(node.port, 'actorserve_client_connections')) === 2, 5_000, 50);
    gone.ws.resume();
    expect((await gone.closed).code).toBe(1006);
    expect(logged(node, 'client closed: no answer to a ping')).toHaveLength(1);

    // The idle client (its library answers pings) and the quiet one live through many more intervals.
    await sleep(pingMs * 8);
    expect((await idle.request({ id: 'i1', model: 'iris', inputs: row })).t).toBe('result');
    expect(await timedOut()).toBe(1);

    // The quiet one stops sending: nothing answers the next ping.
    quietSends = false;
    await quietLoop;
    await eventually(async () => (await timedOut()) === 2, 5_000, 50);
    expect((await quiet.closed).code).toBe(1006);
    expect(await metric(node.port, 'actorserve_client_connections')).toBe(1);
    expect((await idle.request({ id: 'i2', model: 'iris', inputs: row })).t).toBe('result');
    idle.close();
  });

  it('closes a dashboard feed that answers no ping, so vanished browsers cannot hold the capped feeds', async () => {
    const pingMs = 300;
    const node = await spawnNode(['--port', '0', '--node-id', 'feeds', '--models', 'iris', '--client-ping-ms', String(pingMs)]);
    started.push(node);
    const open = (autoPong: boolean) => {
      const ws = new WebSocket(`ws://127.0.0.1:${node.port}/v1/dashboard/ws`, { autoPong });
      const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
      let snapshots = 0;
      ws.on('message', () => snapshots++);
      return { ws, closed, snapshots: () => snapshots };
    };
    const watching = open(true);
    const vanished = open(false);
    await Promise.all([watching, vanished].map((f) => new Promise((resolve, reject) => f.ws.once('open', resolve).once('error', reject))));
    const within = <T>(p: Promise<T>, ms: number) => Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`not closed within ${ms} ms`)))]);
    expect(await within(vanished.closed, 5_000)).toBe(1006);
    // The node's log line reaches this process through a pipe, maybe after the socket's close.
    await eventually(async () => logged(node, 'dashboard feeds closed: no answer to a ping').length === 1, 5_000);
    // The feed that answers its pings lives through many more intervals and keeps getting snapshots.
    const before = watching.snapshots();
    await sleep(pingMs * 8);
    expect(watching.ws.readyState).toBe(WebSocket.OPEN);
    expect(watching.snapshots()).toBeGreaterThan(before);
    expect(logged(node, 'dashboard feeds closed: no answer to a ping')).toHaveLength(1);
    watching.ws.close();
    await watching.closed;
  });
});
