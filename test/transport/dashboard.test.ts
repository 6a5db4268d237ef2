import { EventEmitter } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { chromium, type Browser, type Page } from 'playwright-core';
import { Metrics } from '../../src/metrics/Metrics.js';
import type { NodeContext } from '../../src/transport/http/context.js';
import { DashboardSampler } from '../../src/transport/http/dashboard/Sampler.js';
import { buildSnapshot, histogramQuantile, readTotals, type DashboardSnapshot } from '../../src/transport/http/dashboard/snapshot.js';
import { eventually, startCluster, stopAll, viewOf, type ClusterMember } from '../helpers/cluster.js';
import { IrisLoad } from '../helpers/load.js';
import { RawClient } from '../helpers/RawClient.js';

describe('dashboard snapshot arithmetic', () => {
  it('interpolates a quantile linearly inside the bucket that holds its rank', () => {
    // 10 observations: 4 in (0, 1], 6 in (1, 2].
    expect(histogramQuantile([1, 2, 4], [4, 10, 10, 10], 0.5)).toBeCloseTo(1 + (5 - 4) / 6);
    expect(histogramQuantile([1, 2, 4], [4, 10, 10, 10], 0.2)).toBeCloseTo(0.5);
  });

  it('answers the largest finite bound for a rank in the +Inf bucket, and null for an empty window', () => {
    expect(histogramQuantile([1, 2, 4], [0, 0, 1, 10], 0.99)).toBe(4);
    expect(histogramQuantile([1, 2, 4], [0, 0, 0, 0], 0.5)).toBeNull();
  });

  it('derives requests per second by code, latency quantiles and mean batch size from two readings', async () => {
    const m = new Metrics({ node: 'u1' });
    m.answered('iris', '1', 'ok', 3);
    const prev = await readTotals(m.registry, 0);
    for (let i = 0; i < 40; i++) m.answered('iris', '1', 'ok', 3); // 2.5–5 ms bucket
    for (let i = 0; i < 10; i++) m.answered('iris', '2', 'overloaded');
    m.batchRan('iris', 8, 1, []);
    m.batchRan('iris', 4, 1, []);
    m.workerRestarted('iris');
    const cur = await readTotals(m.registry, 500);
    const s = buildSnapshot({ node: 'u1', time: 1, ready: true, members: [], served: ['iris'], queues: { iris: { queued: 3, running: 2 } }, prev, cur });
    const iris = s.models.find((x) => x.model === 'iris')!;
    expect(s.windowMs).toBe(500);
    expect(iris.rpsByCode).toEqual({ ok: 80, overloaded: 20 });
    expect(iris.rps).toBe(100);
    expect(s.rps).toBe(100);
    expect(iris.p50Ms).toBeGreaterThan(2.5);
    expect(iris.p50Ms).toBeLessThanOrEqual(5);
    expect(iris.batchMean).toBe(6);
    expect(iris.restarts).toBe(1);
    expect(iris.errors).toEqual({ overloaded: 10 });
    expect([iris.queued, iris.running]).toEqual([3, 2]);
  });
});

/** Enough of a `ws` socket for the sampler. */
class FakeFeed extends EventEmitter {
  readyState = 1;
  bufferedAmount = 0;
  readonly sent: DashboardSnapshot[] = [];
  closedWith: number | undefined;
  pings = 0;
  terminated = false;
  send(text: string) {
    this.sent.push(JSON.parse(text) as DashboardSnapshot);
  }
  ping() {
    this.pings++;
  }
  terminate() {
    this.terminated = true;
    this.readyState = 3;
    this.emit('close', 1006);
  }
  close(code: number) {
    this.closedWith = code;
    this.readyState = 3;
    this.emit('close', code);
  }
}

const fakeContext = (metrics: Metrics): NodeContext => ({
  nodeId: 'u1',
  models: [],
  isReady: () => true,
  modelReady: () => true,
  submit: () => Promise.reject(new Error('not used')),
  clusterView: () => [{ nodeId: 'u1', incarnation: 1, addr: '127.0.0.1:1', models: ['iris'], status: 'up', linked: true }],
  queueStats: () => ({ iris: { queued: 0, running: 0 } }),
  metrics,
  maxBodyBytes: 1024,
});

describe('dashboard sampler', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sends a snapshot at once and then every second, and leaves no timer once the last feed closes', async () => {
    vi.useFakeTimers();
    let now = 0;
    const metrics = new Metrics({ node: 'u1' });
    const sampler = new DashboardSampler(fakeContext(metrics), { now: () => now, wallNow: () => 1_000_000 + now });
    const a = new FakeFeed();
    const b = new FakeFeed();
    const timersBefore = vi.getTimerCount();
    sampler.attach(a as unknown as WebSocket);
    await vi.advanceTimersByTimeAsync(0);
    expect(a.sent).toHaveLength(1);
    expect(a.sent[0]!.windowMs).toBe(0);
    sampler.attach(b as unknown as WebSocket);
    expect(b.sent).toHaveLength(1); // the latest snapshot, without waiting for the next tick
    for (let i = 0; i < 7; i++) metrics.answered('iris', '1', 'ok', 1);
    now = 1000;
    await vi.advanceTimersByTimeAsync(1000);
    expect(a.sent.at(-1)!.models[0]!.rpsByCode).toEqual({ ok: 7 });
    expect(b.sent.at(-1)!.rps).toBe(7);
    expect(vi.getTimerCount()).toBe(timersBefore + 1); // one timer for both feeds

    a.close(1000);
    expect(sampler.running).toBe(true);
    b.close(1000);
    expect(sampler.running).toBe(false);
    expect(vi.getTimerCount()).toBe(timersBefore);
  });

  it('skips a feed with more than 1 MiB unsent, ignores small messages and closes a big one with 1009', async () => {
    vi.useFakeTimers();
    const sampler = new DashboardSampler(fakeContext(new Metrics()));
    const slow = new FakeFeed();
    sampler.attach(slow as unknown as WebSocket);
    await vi.advanceTimersByTimeAsync(0);
    slow.bufferedAmount = 2 * 1024 * 1024;
    await vi.advanceTimersByTimeAsync(3000);
    expect(slow.sent).toHaveLength(1);
    slow.emit('message', Buffer.from('hello'));
    expect(slow.closedWith).toBeUndefined();
    slow.emit('message', Buffer.alloc(4096));
    expect(slow.closedWith).toBe(1009);
    expect(sampler.running).toBe(false);
  });

  it('terminates a feed that answered neither the last ping nor with a message, and pings the others again', () => {
    const sampler = new DashboardSampler(fakeContext(new Metrics()), { maxFeeds: 3 });
    const [gone, ponging, talking] = [new FakeFeed(), new FakeFeed(), new FakeFeed()];
    for (const f of [gone, ponging, talking]) sampler.attach(f as unknown as WebSocket);
    expect(sampler.pingFeeds()).toBe(0);
    expect([gone.pings, ponging.pings, talking.pings]).toEqual([1, 1, 1]);
    ponging.emit('pong');
    talking.emit('message', Buffer.from('hi'));
    expect(sampler.pingFeeds()).toBe(1);
    expect([gone.terminated, ponging.terminated, talking.terminated]).toEqual([true, false, false]);
    expect([ponging.pings, talking.pings]).toEqual([2, 2]);
    expect(sampler.feedCount).toBe(2);
    // Its place under the cap is free again.
    const next = new FakeFeed();
    sampler.attach(next as unknown as WebSocket);
    expect(next.closedWith).toBeUndefined();
    for (const f of [ponging, talking, next]) f.close(1000);
  });

  it('refuses a feed over the cap with 1013', () => {
    const sampler = new DashboardSampler(fakeContext(new Metrics()), { maxFeeds: 1 });
    const a = new FakeFeed();
    const b = new FakeFeed();
    sampler.attach(a as unknown as WebSocket);
    sampler.attach(b as unknown as WebSocket);
    expect(b.closedWith).toBe(1013);
    a.close(1000);
  });
});

/** The page's DOM, as far as the functions run in the browser use it (the project compiles without DOM types). */
declare const document: { querySelector(selector: string): { textContent: string | null } | null };

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'];

describe('dashboard in a browser, on a 3-node cluster', () => {
  let members: ClusterMember[] = [];
  let browser: Browser | undefined;
  let page: Page;
  let client: RawClient | undefined;
  let load: IrisLoad | undefined;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    const [cluster, b] = await Promise.all([
      startCluster(['d1', 'd2', 'd3']),
      // chromium.launch gives every browser a fresh temporary profile, removed on close.
      chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS, timeout: 30_000 }),
    ]);
    members = cluster;
    browser = b;
    await eventually(async () => {
      const views = await Promise.all(members.map((m) => viewOf(m.port)));
      return views.every((v) => v.length === 3 && v.every((e) => e.status === 'up'));
    }, 20_000);
    page = await browser.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    // A peer's feed that fails while it leaves is logged by Chromium; that is expected, anything else (a CSP refusal, a script error) is not.
    page.on('console', (m) => void (m.type() === 'error' && !/WebSocket connection/.test(m.text()) && pageErrors.push(m.text())));
  }, 90_000);

  afterAll(async () => {
    load?.stop();
    client?.close();
    await browser?.close();
    await stopAll(members);
  }, 30_000);

  const d1 = () => members[0]!;

  it('serves the page, its script and uPlot from the node with content types and cache headers', async () => {
    const res = await fetch(`http://127.0.0.1:${d1().port}/dashboard`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('cache-control')).toBe('no-cache');
    const html = await res.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/dashboard\/[^"]+)"/g)].map((m) => m[1]!);
    expect(assets.map((a) => a.replace(/^.*-/, '')).sort()).toEqual(['app.js', 'uPlot.iife.min.js', 'uPlot.min.css']);
    for (const a of assets) {
      const r = await fetch(`http://127.0.0.1:${d1().port}${a}`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toMatch(a.endsWith('.css') ? /^text\/css/ : /^text\/javascript/);
      expect(r.headers.get('cache-control')).toMatch(/max-age=\d+/);
      const again = await fetch(`http://127.0.0.1:${d1().port}${a}`, { headers: { 'if-none-match': r.headers.get('etag')! } });
      expect(again.status).toBe(304);
    }
  });

  it('pushes a snapshot at once on connect and ignores what the browser sends', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${d1().port}/v1/dashboard/ws`);
    const first = await new Promise<DashboardSnapshot>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no snapshot within 3 s')), 3000);
      ws.once('message', (d: Buffer) => (clearTimeout(timer), resolve(JSON.parse(d.toString()) as DashboardSnapshot)));
    });
    expect(first).toMatchObject({ t: 'snapshot', v: 1, node: 'd1' });
    expect(first.members.map((m) => m.id)).toEqual(['d1', 'd2', 'd3']);
    ws.send('{"t":"anything"}');
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send(Buffer.alloc(8 * 1024));
    expect(await closed).toBe(1009);
  });

  it('shows three members up and non-zero throughput while under load', async () => {
    client = await RawClient.connect(d1().node.url);
    load = new IrisLoad(client, { window: 16, maxRequests: 10_000_000, maxMs: 120_000, prefix: 'dash' });
    await page.goto(`http://127.0.0.1:${d1().port}/dashboard`, { timeout: 15_000 });
    await page.waitForFunction(() => document.querySelector('#conn-state')?.textContent === 'live', null, { timeout: 10_000 });
    await page.waitForFunction(() => document.querySelector('#up-count')?.textContent === '3', null, { timeout: 10_000 });
    for (const id of ['d1', 'd2', 'd3']) expect(await page.textContent(`#members tr[data-node="${id}"] .status`)).toBe('up');
    expect(await page.textContent('#member-count')).toBe('3');
    await page.waitForFunction(() => Number.parseFloat(document.querySelector('#throughput-total')?.textContent ?? '0') > 0, null, { timeout: 10_000 });
    await page.waitForFunction(() => Number.parseFloat(document.querySelector('#throughput-cluster')?.textContent ?? '0') > 0, null, { timeout: 10_000 });
    expect(Number(await page.textContent('#models tr[data-model="iris"] .rps'))).toBeGreaterThan(0);
    expect(await page.locator('#chart-throughput canvas').count()).toBe(1);
    expect(await page.locator('#chart-latency canvas').count()).toBe(1);
    expect(pageErrors).toEqual([]);
  });

  it('shows a member that leaves as leaving or down (or drops it) and the up count falls to 2', async () => {
    const leaver = members[2]!;
    const stopped = leaver.node.stop('SIGTERM');
    const gone = await page.waitForFunction(() => {
      const status = document.querySelector('#members tr[data-node="d3"] .status')?.textContent ?? null;
      const done = document.querySelector('#up-count')?.textContent === '2' && (status === null || status === 'leaving' || status === 'down');
      return done ? { status } : false;
    }, null, { timeout: 20_000, polling: 50 });
    expect([null, 'leaving', 'down']).toContain(((await gone.jsonValue()) as { status: string | null }).status);
    expect(await page.textContent('#member-count')).toBe(String(await page.locator('#members tbody tr').count()));
    for (const id of ['d1', 'd2']) expect(await page.textContent(`#members tr[data-node="${id}"] .status`)).toBe('up');
    expect(Number.parseFloat((await page.textContent('#throughput-total')) ?? '0')).toBeGreaterThan(0);
    await stopped;
    expect(pageErrors).toEqual([]);
  }, 40_000);
});
