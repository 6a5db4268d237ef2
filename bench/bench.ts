/**
 * `npm run bench` (build first: `npm run build`). For each model it measures
 *
 *  1. the in-process ceiling: onnxruntime-node on this thread with the node's
 *     settings (same file, intra-op threads, one session), over a few batch
 *     sizes;
 *  2. end to end: a node started as a child process, driven by a load
 *     generator in a second child process (this script in `--client` mode)
 *     over ONE WebSocket connection, closed loop with a pipelining window;
 *
 * and prints a Markdown table with the ratio of the two. Every loop is bounded
 * in count and time; the children are stopped by their pid, also on error and
 * on SIGINT.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import WebSocket, { type RawData } from 'ws';
import { decodeUntrusted, encode } from '../src/transport/codec.js';
import type { WelcomeFrame } from '../src/transport/protocol.js';

const USAGE = `usage: npm run bench -- [--duration S] [--models iris,text-orientation] [--window N] [--help]
  --duration S   measured seconds per model, end to end (default 10; a warm-up of
                 min(2, S/5) s comes first and is not counted)
  --models A,B   models to bench (default iris,text-orientation)
  --window N     requests in flight on the one connection (default 512 for iris,
                 64 otherwise; capped by the node's maxInFlight)
Run \`npm run build\` first: this runs from dist/.`;

const THIS_FILE = fileURLToPath(import.meta.url);
const ROOT = (() => {
  let dir = dirname(THIS_FILE);
  for (let i = 0; i < 8 && !existsSync(join(dir, 'package.json')); i++) dir = dirname(dir);
  return dir;
})();

const DEFAULT_WINDOW: Record<string, number> = { iris: 512, 'text-orientation': 64 };
const CEILING_BATCHES: Record<string, number[]> = { iris: [1, 8, 32, 128, 256], 'text-orientation': [1, 4, 8, 16, 32] };
const CEILING_SECONDS_PER_BATCH = 1.5;
const CEILING_MAX_RUNS = 100_000;
const NODE_READY_TIMEOUT_MS = 90_000;
const DRAIN_TIMEOUT_MS = 10_000;

// ---------------------------------------------------------------- helpers

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One sample row of `rows` with the model's per-row shape; iris gets flower-like values. */
function sampleInput(model: string, rowShape: readonly number[], rows: number, seed = 7): Float32Array {
  const rand = rng(seed);
  const per = rowShape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(per * rows);
  if (model === 'iris') {
    const means = [5.8, 3.0, 3.8, 1.2];
    for (let i = 0; i < out.length; i++) out[i] = means[i % 4]! + (rand() - 0.5);
  } else {
    for (let i = 0; i < out.length; i++) out[i] = rand() * 2 - 1;
  }
  return out;
}

const percentile = (sorted: Float64Array, p: number): number =>
  sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function fmt(n: number | undefined, digits = 0): string {
  if (n === undefined || !Number.isFinite(n)) return 'n/a';
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// ---------------------------------------------------------------- in-process ceiling

interface Ceiling {
  threads: number;
  /** items (rows) per second by batch size */
  byBatch: Map<number, number>;
  best: { batch: number; perSec: number };
}

async function ceiling(model: string): Promise<Ceiling> {
  // Loaded here only: the --client child must stay free of onnxruntime.
  const ort = await import('onnxruntime-node');
  const { resolveModels, irisModelPath } = await import('../src/models/registry.js');
  const [spec] = resolveModels([model]);
  if (spec === undefined) throw new Error(`no spec for ${model}`);
  if (model === 'iris' && !existsSync(irisModelPath)) {
    // Same as the CLI does on first start; done here first so the two never race.
    const { buildIrisModel } = await import('../src/models/builders/iris.js');
    buildIrisModel(irisModelPath);
  }
  const session = await ort.InferenceSession.create(spec.path, {
    intraOpNumThreads: spec.intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const input = spec.inputs[0]!;
  const rowShape = input.shape.slice(1);
  const byBatch = new Map<number, number>();
  try {
    for (const batch of CEILING_BATCHES[model] ?? [1, 8, 32]) {
      const data = sampleInput(model, rowShape, batch);
      const feeds = { [input.name]: new ort.Tensor('float32', data, [batch, ...rowShape]) };
      for (let i = 0; i < 3; i++) await session.run(feeds);
      const start = performance.now();
      const until = start + CEILING_SECONDS_PER_BATCH * 1000;
      let runs = 0;
      while (runs < CEILING_MAX_RUNS && performance.now() < until) {
        await session.run(feeds);
        runs++;
      }
      byBatch.set(batch, (runs * batch) / ((performance.now() - start) / 1000));
    }
  } finally {
    await session.release();
  }
  let best = { batch: 1, perSec: 0 };
  for (const [batch, perSec] of byBatch) if (perSec > best.perSec) best = { batch, perSec };
  return { threads: spec.intraOpThreads, byBatch, best };
}

// ---------------------------------------------------------------- the node child

interface NodeChild {
  proc: ChildProcess;
  port: number;
  stderrTail: string[];
}

const children = new Set<ChildProcess>();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function httpStatus(url: string, timeoutMs = 1_000): Promise<number> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/**
 * Starts `actorserve node` and waits until /v2/health/ready answers 200.
 * The port is picked here rather than with `--port 0`: the node logs its
 * `listening` line at info, and the bench runs it at warn so logging costs
 * nothing on the measured path.
 */
async function startNode(models: string[]): Promise<NodeChild> {
  const port = await freePort();
  const args = [join(ROOT, 'bin', 'actorserve.js'), 'node', '--port', String(port), '--node-id', 'bench',
    '--models', models.join(','), '--log-level', 'warn'];
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  const stderrTail: string[] = [];
  const keep = (line: string) => {
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
  };
  createInterface({ input: proc.stdout! }).on('line', keep);
  createInterface({ input: proc.stderr! }).on('line', keep);
  const until = Date.now() + NODE_READY_TIMEOUT_MS;
  while (Date.now() < until) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`the node exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${stderrTail.join('\n')}`);
    }
    if ((await httpStatus(`http://127.0.0.1:${port}/v2/health/ready`)) === 200) return { proc, port, stderrTail };
    await sleep(100);
  }
  throw new Error(`the node was not ready within ${NODE_READY_TIMEOUT_MS} ms:\n${stderrTail.join('\n')}`);
}

/** SIGTERM by pid, then SIGKILL after `graceMs`. */
async function stopChild(proc: ChildProcess, graceMs = 5_000): Promise<void> {
  if (proc.pid === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  try {
    process.kill(proc.pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  const timer = setTimeout(() => {
    if (proc.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // gone between the check and the kill
      }
    }
  }, graceMs);
  await exited;
  clearTimeout(timer);
}

function killChildrenNow(): void {
  for (const c of children) {
    if (c.pid !== undefined) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

/** CPU seconds (user+system) of a pid from /proc; undefined where /proc is missing. */
function cpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock ticks (100 Hz on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------- metrics and probes during a run

/** Largest event-loop delay the node reports on /metrics (prom-client style), in ms; undefined without one. */
async function scrapeLoopDelayMs(port: number): Promise<number | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1_000) });
    const text = await res.text();
    if (res.status !== 200) return undefined;
    for (const line of text.split('\n')) {
      const m = /^(\w*event_?loop\w*max\w*)(?:\{[^}]*\})?\s+([-+0-9.eE]+)/i.exec(line);
      if (m) return Number(m[2]) * (/seconds/.test(m[1]!) ? 1000 : 1);
    }
    return undefined;
  } catch {
    return undefined;
  }
}

interface Probe {
  /** Max and p99 round trip of GET /v2/health/live while the load ran, ms. */
  maxMs: number;
  p99Ms: number;
  samples: number;
  /** From /metrics when the node has one. */
  loopDelayMaxMs: number | undefined;
}

/** Samples the node every 100 ms until `stop` resolves. */
async function probeNode(port: number, stop: Promise<void>): Promise<Probe> {
  let done = false;
  void stop.then(() => (done = true));
  const rtts: number[] = [];
  let loopMax: number | undefined;
  await scrapeLoopDelayMs(port); // prom-client resets its loop-delay histogram on each scrape
  let lastScrape = performance.now();
  for (let i = 0; !done && i < 100_000; i++) {
    const t0 = performance.now();
    if ((await httpStatus(`http://127.0.0.1:${port}/v2/health/live`, 5_000)) === 200) rtts.push(performance.now() - t0);
    if (performance.now() - lastScrape > 1_000) {
      const v = await scrapeLoopDelayMs(port);
      if (v !== undefined) loopMax = Math.max(loopMax ?? 0, v);
      lastScrape = performance.now();
    }
    await Promise.race([sleep(100), stop]);
  }
  const v = await scrapeLoopDelayMs(port);
  if (v !== undefined) loopMax = Math.max(loopMax ?? 0, v);
  const sorted = Float64Array.from(rtts).sort();
  return { maxMs: sorted.at(-1) ?? Number.NaN, p99Ms: percentile(sorted, 99), samples: sorted.length, loopDelayMaxMs: loopMax };
}

// ---------------------------------------------------------------- the load generator (child, --client)

interface ClientReport {
  model: string;
  window: number;
  seconds: number;
  ok: number;
  errors: Record<string, number>;
  unmatched: number;
  reqPerSec: number;
  p50Ms: number;
  p99Ms: number;
  meanBatch: number;
  clientCpuPct: number;
  clientLoopMaxMs: number;
}

/**
 * Closed loop over one connection: `window` requests in flight, a new one sent
 * as each answer arrives. The request frame is encoded once with a 4-byte id
 * slot; each send patches the id in place (ws copies the bytes while masking
 * them, so the template can be reused at once).
 */
async function clientMain(url: string, model: string, durationS: number, warmupS: number, window: number): Promise<void> {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const welcome = await new Promise<WelcomeFrame>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no welcome within 10 s')), 10_000);
    ws.once('error', reject);
    ws.once('message', (data: RawData) => {
      clearTimeout(timer);
      resolve(decodeUntrusted(data as Buffer) as WelcomeFrame);
    });
  });
  const info = welcome.models.find((m) => m.name === model);
  if (info === undefined) throw new Error(`the node does not serve ${model}`);
  const input = info.inputs[0]!;
  const rowShape = input.shape.slice(1);
  const data = sampleInput(model, rowShape, 1);
  const ID_SLOT = 0xfffffffe;
  const template = encode({
    t: 'infer',
    id: ID_SLOT,
    model,
    inputs: { [input.name]: { dtype: 'float32', shape: [1, ...rowShape], data: new Uint8Array(data.buffer) } },
  });
  const marker = Buffer.from([0xa2, 0x69, 0x64, 0xce, 0xff, 0xff, 0xff, 0xfe]); // "id": uint32 0xfffffffe
  const at = template.indexOf(marker);
  if (at < 0) throw new Error('cannot find the id slot in the encoded frame');
  const idPos = at + 4;
  const inFlightCap = Math.min(window, welcome.limits.maxInFlight);

  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let nextId = 1;
  let ok = 0;
  let unmatched = 0;
  let batchSum = 0;
  const t0 = performance.now();
  const measureFrom = t0 + warmupS * 1000;
  const endAt = measureFrom + durationS * 1000;
  let measuring = false;
  let cpuAtMeasure = process.cpuUsage();
  const loop = monitorEventLoopDelay({ resolution: 10 });

  const send = (): void => {
    const id = nextId++;
    template.writeUInt32BE(id, idPos);
    sentAt.set(id, performance.now());
    ws.send(template);
  };

  const finished = new Promise<void>((resolve, reject) => {
    ws.on('close', (code) => reject(new Error(`connection closed (${code}) during the run`)));
    ws.on('message', (raw: RawData) => {
      const now = performance.now();
      const f = decodeUntrusted(raw as Buffer) as { t: string; id: number; code?: string; batchSize?: number };
      const start = sentAt.get(f.id);
      if (start === undefined) {
        unmatched++;
        return;
      }
      sentAt.delete(f.id);
      if (!measuring && now >= measureFrom) {
        measuring = true;
        cpuAtMeasure = process.cpuUsage();
        loop.enable();
        process.stdout.write(`${JSON.stringify({ phase: 'measure' })}\n`);
      }
      if (now >= measureFrom && now < endAt) {
        if (f.t === 'result') {
          ok++;
          batchSum += f.batchSize ?? 0;
          latencies.push(now - start);
        } else {
          const code = f.code ?? 'unknown';
          errors[code] = (errors[code] ?? 0) + 1;
        }
      }
      if (now < endAt) send();
      else if (sentAt.size === 0) resolve();
    });
  });
  for (let i = 0; i < inFlightCap; i++) send();
  let limitTimer: NodeJS.Timeout | undefined;
  const drainLimit = new Promise<never>((_, reject) => {
    limitTimer = setTimeout(
      () => reject(new Error(`${sentAt.size} requests still unanswered ${DRAIN_TIMEOUT_MS} ms after the run`)),
      warmupS * 1000 + durationS * 1000 + DRAIN_TIMEOUT_MS,
    );
  });
  try {
    await Promise.race([finished, drainLimit]);
  } finally {
    clearTimeout(limitTimer);
    loop.disable();
    ws.terminate();
  }
  const cpu = process.cpuUsage(cpuAtMeasure);
  const sorted = Float64Array.from(latencies).sort();
  const report: ClientReport = {
    model,
    window: inFlightCap,
    seconds: durationS,
    ok,
    errors,
    unmatched,
    reqPerSec: ok / durationS,
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    meanBatch: ok > 0 ? batchSum / ok : Number.NaN,
    clientCpuPct: ((cpu.user + cpu.system) / 1e6 / durationS) * 100,
    clientLoopMaxMs: loop.max / 1e6,
  };
  process.stdout.write(`${JSON.stringify({ phase: 'done', report })}\n`);
}

interface EndToEnd {
  report: ClientReport;
  probe: Probe;
  nodeCpuPct: number | undefined;
}

/** Runs the load generator as a separate process and samples the node meanwhile. */
async function endToEnd(node: NodeChild, model: string, durationS: number, warmupS: number, window: number): Promise<EndToEnd> {
  const url = `ws://127.0.0.1:${node.port}/v1/stream`;
  const args = [THIS_FILE, '--client', '--url', url, '--model', model, '--duration', String(durationS),
    '--warmup', String(warmupS), '--window', String(window)];
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4_000)));

  let report: ClientReport | undefined;
  let stopProbe!: () => void;
  const probeStop = new Promise<void>((r) => (stopProbe = r));
  let probe: Promise<Probe> | undefined;
  let cpuStart: number | undefined;
  let cpuEnd: number | undefined;
  let measureStartedAt = 0;
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    let msg: { phase?: string; report?: ClientReport };
    try {
      msg = JSON.parse(line) as typeof msg;
    } catch {
      return;
    }
    if (msg.phase === 'measure' && probe === undefined) {
      cpuStart = cpuSeconds(node.proc.pid);
      measureStartedAt = performance.now();
      probe = probeNode(node.port, probeStop);
    } else if (msg.phase === 'done' && msg.report !== undefined) {
      report = msg.report;
    }
  });
  // The client stops counting at the end of its measured window; stop probing then too.
  const measureEnd = setInterval(() => {
    if (probe !== undefined && performance.now() - measureStartedAt >= durationS * 1000) {
      cpuEnd ??= cpuSeconds(node.proc.pid);
      stopProbe();
    }
  }, 50);
  const limitMs = (warmupS + durationS) * 1000 + DRAIN_TIMEOUT_MS + 20_000;
  const killer = setTimeout(() => void stopChild(proc, 1_000), limitMs);
  const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
  clearTimeout(killer);
  clearInterval(measureEnd);
  cpuEnd ??= cpuSeconds(node.proc.pid);
  stopProbe();
  if (report === undefined || code !== 0) {
    throw new Error(`load generator for ${model} failed (exit ${code}):\n${stderr}`);
  }
  const p = probe !== undefined ? await probe : { maxMs: Number.NaN, p99Ms: Number.NaN, samples: 0, loopDelayMaxMs: undefined };
  const nodeCpuPct = cpuStart !== undefined && cpuEnd !== undefined ? ((cpuEnd - cpuStart) / durationS) * 100 : undefined;
  return { report, probe: p, nodeCpuPct };
}

// ---------------------------------------------------------------- main

function positive(name: string, s: string | undefined, fallback: number): number {
  if (s === undefined) return fallback;
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) throw new RangeError(`--${name} must be a positive number, got ${s}`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string' },
      models: { type: 'string', default: 'iris,text-orientation' },
      window: { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
      // --client mode (internal: the bench starts itself with these)
      client: { type: 'boolean', default: false },
      url: { type: 'string' },
      model: { type: 'string' },
      warmup: { type: 'string' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const duration = positive('duration', values.duration, 10);
  if (values.client) {
    if (values.url === undefined || values.model === undefined) throw new RangeError('--client needs --url and --model');
    await clientMain(values.url, values.model, duration, positive('warmup', values.warmup, 2),
      Math.floor(positive('window', values.window, 64)));
    return;
  }

  const models = values.models.split(',').map((s) => s.trim()).filter(Boolean);
  if (models.length === 0) throw new RangeError('--models is empty');
  const warmup = Math.min(2, duration / 5);
  const windowOverride = values.window === undefined ? undefined : Math.floor(positive('window', values.window, 64));

  process.once('SIGINT', () => {
    killChildrenNow();
    process.exit(130);
  });

  console.log(`# actorserve bench — ${new Date().toISOString()}`);
  console.log(
    `node ${process.version}, ${availableParallelism()} CPUs (load average ${loadavg()[0]!.toFixed(2)} at start), ` +
      `${duration} s measured per model after ${warmup} s warm-up\n`,
  );

  const ceilings = new Map<string, Ceiling | Error>();
  for (const m of models) {
    process.stderr.write(`in-process ceiling: ${m} ...\n`);
    ceilings.set(m, await ceiling(m).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))));
  }

  const e2e = new Map<string, EndToEnd | Error>();
  process.stderr.write('starting the node ...\n');
  const node = await startNode(models);
  try {
    for (const m of models) {
      const window = windowOverride ?? DEFAULT_WINDOW[m] ?? 64;
      process.stderr.write(`end to end: ${m}, window ${window}, ${warmup + duration} s ...\n`);
      e2e.set(m, await endToEnd(node, m, duration, warmup, window).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e)))));
    }
  } finally {
    await stopChild(node.proc);
  }

  console.log('| model | ceiling, batch 1 | ceiling, best (batch) | end to end, 1 conn (window) | e2e / best ceiling | p50 ms | p99 ms | µs per request | mean batch | errors |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  const notes: string[] = [];
  for (const m of models) {
    const c = ceilings.get(m);
    const r = e2e.get(m);
    const ceil = c instanceof Error || c === undefined ? undefined : c;
    const run = r instanceof Error || r === undefined ? undefined : r;
    if (c instanceof Error) notes.push(`${m}: ceiling failed: ${c.message}`);
    if (r instanceof Error) notes.push(`${m}: end to end failed: ${r.message}`);
    const b1 = ceil?.byBatch.get(1);
    const rps = run?.report.reqPerSec;
    const errs = run ? Object.entries(run.report.errors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none' : 'n/a';
    console.log(
      `| ${m} | ${fmt(b1)} /s | ${ceil ? `${fmt(ceil.best.perSec)} /s (${ceil.best.batch})` : 'n/a'} | ` +
        `${run ? `${fmt(rps)} req/s (${run.report.window})` : 'n/a'} | ` +
        `${rps !== undefined && ceil ? (rps / ceil.best.perSec).toPrecision(2) : 'n/a'} | ` +
        `${fmt(run?.report.p50Ms, 2)} | ${fmt(run?.report.p99Ms, 2)} | ` +
        `${rps ? fmt(1e6 / rps, 1) : 'n/a'} | ${fmt(run?.report.meanBatch, 1)} | ${errs} |`,
    );
    if (ceil) {
      const all = [...ceil.byBatch].map(([b, v]) => `${b}: ${fmt(v)}`).join(', ');
      notes.push(`${m}: in-process items/s by batch (${ceil.threads} intra-op thread${ceil.threads === 1 ? '' : 's'}, one session): ${all}`);
    }
    if (run) {
      const eld = run.probe.loopDelayMaxMs !== undefined ? `${fmt(run.probe.loopDelayMaxMs, 1)} ms` : 'n/a (the node has no /metrics yet)';
      notes.push(
        `${m}: node max event-loop delay ${eld}; GET /v2/health/live under load: p99 ${fmt(run.probe.p99Ms, 1)} ms, ` +
          `max ${fmt(run.probe.maxMs, 1)} ms (${run.probe.samples} probes); node CPU ${fmt(run.nodeCpuPct)}%, ` +
          `load generator CPU ${fmt(run.report.clientCpuPct)}% (its loop max ${fmt(run.report.clientLoopMaxMs, 1)} ms)` +
          (run.report.unmatched > 0 ? `; ${run.report.unmatched} answers matched no request` : ''),
      );
      if (ceil && rps !== undefined && rps > ceil.best.perSec) {
        notes.push(`${m}: WARNING end to end beat the in-process ceiling, so the ceiling run was disturbed (other load on the machine?); rerun`);
      }
      if (b1 !== undefined && rps) {
        notes.push(`${m}: per-request overhead over a batch-1 in-process run: ${fmt(1e6 / rps - 1e6 / b1, 1)} µs ` +
          `(${fmt(1e6 / rps, 1)} µs end to end vs ${fmt(1e6 / b1, 1)} µs in process)`);
      }
    }
  }
  console.log('');
  for (const n of notes) console.log(`- ${n}`);
  console.log(`\nThe node, the load generator and this script share ${availableParallelism()} CPUs; end-to-end figures include that contention.`);
}

main().catch((e: unknown) => {
  killChildrenNow();
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exitCode = 1;
});
