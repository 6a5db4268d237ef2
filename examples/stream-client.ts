/**
 * Streams many inference requests over one connection with the client SDK's
 * bounded window, then prints throughput, latency percentiles and errors.
 *
 *   node dist/examples/stream-client.js [URL] [--count 10000] [--model iris] [--window 256] [--seed 1]
 *
 * URL defaults to ws://127.0.0.1:8080/v1/stream. For `iris` the inputs are
 * iris-like flower measurements; for any other model, uniform noise shaped by
 * the model's first input spec (dynamic dims set to 1).
 */
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { connect, type Float32Tensor, type StreamRequest } from '../src/client/Client.js';
import type { ModelInfo } from '../src/transport/protocol.js';
import { mulberry32 as rng } from '../src/random.js';

const USAGE = `usage: stream-client [URL] [--count N] [--model NAME] [--window N] [--seed N]
  URL       default ws://127.0.0.1:8080/v1/stream
  --count   requests to send (default 10000)
  --model   model name (default iris)
  --window  requests in flight at most (default 256)
  --seed    seed of the input generator (default 1)`;

interface Args {
  url: string;
  count: number;
  model: string;
  window: number;
  seed: number;
}

function parse(): Args {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      count: { type: 'string', default: '10000' },
      model: { type: 'string', default: 'iris' },
      window: { type: 'string', default: '256' },
      seed: { type: 'string', default: '1' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const int = (name: string, s: string, min: number): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new RangeError(`--${name} must be an integer >= ${min}, got ${s}`);
    return n;
  };
  return {
    url: positionals[0] ?? 'ws://127.0.0.1:8080/v1/stream',
    count: int('count', values.count, 1),
    model: values.model,
    window: int('window', values.window, 1),
    seed: int('seed', values.seed, 0),
  };
}


// Per-class mean and spread of sepal length/width, petal length/width (cm).
const IRIS_CLASSES = [
  { mean: [5.0, 3.4, 1.5, 0.25], sd: [0.35, 0.38, 0.17, 0.1] },
  { mean: [5.9, 2.8, 4.3, 1.3], sd: [0.52, 0.31, 0.47, 0.2] },
  { mean: [6.6, 3.0, 5.6, 2.0], sd: [0.64, 0.32, 0.55, 0.27] },
];

function inputMaker(model: ModelInfo | undefined, name: string, seed: number): () => Record<string, Float32Tensor> {
  const rand = rng(seed);
  const gauss = (): number => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  if (name === 'iris') {
    const input = model?.inputs[0]?.name ?? 'input';
    return () => {
      const c = IRIS_CLASSES[Math.floor(rand() * IRIS_CLASSES.length)]!;
      const data = Float32Array.from(c.mean, (m, i) => Math.max(0.1, m + gauss() * c.sd[i]!));
      return { [input]: { data, shape: [1, 4] } };
    };
  }
  const spec = model?.inputs[0];
  if (spec === undefined) throw new Error(`model ${name} lists no inputs`);
  const shape = spec.shape.map((d) => (d < 0 ? 1 : d));
  const size = shape.reduce((a, b) => a * b, 1);
  return () => ({ [spec.name]: { data: Float32Array.from({ length: size }, () => rand() * 2 - 1), shape } });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const args = parse();
  const client = await connect(args.url);
  try {
    const info = client.welcome.models.find((m) => m.name === args.model);
    if (info === undefined && args.model !== 'iris') {
      const served = client.welcome.models.map((m) => m.name).join(', ');
      throw new Error(`${client.welcome.node} does not serve ${args.model} (it serves: ${served})`);
    }
    const makeInputs = inputMaker(info, args.model, args.seed);
    const window = Math.min(args.window, client.welcome.limits.maxInFlight);

    type Timed = StreamRequest & { sentAt: number };
    // Lazy: the stream pulls a request right before sending it, so sentAt is the send time.
    function* requests(): Generator<Timed> {
      for (let i = 0; i < args.count; i++) {
        yield { model: args.model, inputs: makeInputs(), sentAt: performance.now() };
      }
    }

    const latencies = new Float64Array(args.count);
    let ok = 0;
    const errors = new Map<string, number>();
    let batchSum = 0;
    let batchMax = 0;
    const start = performance.now();
    for await (const o of client.stream(requests(), { window })) {
      if (o.ok) {
        latencies[ok++] = performance.now() - o.request.sentAt;
        batchSum += o.result.batchSize;
        batchMax = Math.max(batchMax, o.result.batchSize);
      } else {
        errors.set(o.error.code, (errors.get(o.error.code) ?? 0) + 1);
      }
    }
    const seconds = (performance.now() - start) / 1000;
    const sorted = latencies.subarray(0, ok).sort();

    console.log(`node ${client.welcome.node}, model ${args.model}, ${args.count} requests, window ${window}`);
    console.log(`throughput  ${(args.count / seconds).toFixed(0)} req/s (${ok} ok in ${seconds.toFixed(2)} s)`);
    console.log(`latency     p50 ${percentile(sorted, 50).toFixed(2)} ms, p99 ${percentile(sorted, 99).toFixed(2)} ms`);
    const errs = [...errors].map(([code, n]) => `${code}=${n}`).join(' ');
    console.log(`errors      ${errs || 'none'}`);
    if (ok > 0) console.log(`batch size  mean ${(batchSum / ok).toFixed(1)}, max ${batchMax}`);
    if (ok === 0) process.exitCode = 1;
  } finally {
    await client.close();
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
  process.exitCode = 1;
});
