/**
 * A TCP fault proxy in front of one node's port, for manual chaos runs.
 *
 *   node dist/cluster/faultproxy.js --listen PORT --target HOST:PORT [--listen-host H]
 *        [--mode pass|delay:MS[:JITTER]|bandwidth:BPS|blackhole|reset|slice:N]
 *
 * Then type a mode spec per line on stdin to switch at run time (`blackhole`,
 * then `pass` to heal), `stats` to print the counters, `quit` to stop. EOF on
 * stdin leaves the proxy running; Ctrl-C or SIGTERM closes it.
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { FaultProxy, formatFaultMode, parseFaultMode } from '../src/chaos/FaultProxy.js';

const USAGE =
  'usage: node dist/cluster/faultproxy.js --listen PORT --target HOST:PORT [--listen-host HOST]\n' +
  '         [--mode pass|delay:MS[:JITTER]|bandwidth:BPS|blackhole|reset|slice:N]\n' +
  'stdin: one mode spec per line to switch; "stats" prints counters; "quit" stops.\n';

function fail(message: string): never {
  process.stderr.write(`faultproxy: ${message}\n${USAGE}`);
  process.exit(2);
}

function parsePort(text: string, what: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < min || n > 65535) fail(`${what} must be a port ${min}..65535, got ${JSON.stringify(text)}`);
  return n;
}

/** HOST:PORT, with [v6]:PORT allowed. */
function parseTarget(text: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  if (at <= 0) fail(`--target must be HOST:PORT, got ${JSON.stringify(text)}`);
  let host = text.slice(0, at);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: parsePort(text.slice(at + 1), '--target port', 1) };
}

let values;
try {
  ({ values } = parseArgs({
    options: {
      listen: { type: 'string' },
      'listen-host': { type: 'string', default: '127.0.0.1' },
      target: { type: 'string' },
      mode: { type: 'string', default: 'pass' },
      help: { type: 'boolean', short: 'h' },
    },
  }));
} catch (err) {
  fail((err as Error).message);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (values.listen === undefined) fail('--listen is required');
if (values.target === undefined) fail('--target is required');
const listenPort = parsePort(values.listen, '--listen', 0);
const target = parseTarget(values.target);
let initial;
try {
  initial = parseFaultMode(values.mode);
} catch (err) {
  fail((err as Error).message);
}

const proxy = new FaultProxy({ listenHost: values['listen-host'], listenPort, targetHost: target.host, targetPort: target.port, mode: initial });
const port = await proxy.start();
process.stdout.write(`faultproxy ${values['listen-host']}:${port} -> ${target.host}:${target.port} mode ${formatFaultMode(proxy.mode)}\n`);

let stopping = false;
async function stop(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await proxy.close();
  process.exit(code);
}
process.on('SIGINT', () => void stop(0));
process.on('SIGTERM', () => void stop(0));

const lines = createInterface({ input: process.stdin, terminal: false });
lines.on('line', (raw) => {
  const line = raw.trim();
  if (line === '' || line.startsWith('#')) return;
  if (line === 'stats') {
    process.stdout.write(`${JSON.stringify(proxy.stats())}\n`);
    return;
  }
  if (line === 'quit' || line === 'exit') {
    void stop(0);
    return;
  }
  try {
    const prev = proxy.setMode(parseFaultMode(line));
    process.stdout.write(`mode ${formatFaultMode(proxy.mode)} (was ${formatFaultMode(prev)})\n`);
  } catch (err) {
    process.stderr.write(`faultproxy: ${(err as Error).message}\n`);
  }
});
