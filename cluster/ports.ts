/** Local-machine helpers shared by the launcher, the chaos suite, the bench, the examples and the tests. */
import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';

/** The first port the kernel may pick for outgoing connections (Linux), or of the IANA dynamic range elsewhere. */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(low) && low > 0) return low;
  } catch {
    // not Linux
  }
  return 49152;
}

const bindable = (port: number): Promise<Server | undefined> =>
  new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(undefined));
    s.listen(port, '127.0.0.1', () => resolve(s));
  });

/**
 * `n` distinct ports that were free a moment ago on 127.0.0.1, chosen below
 * the kernel's ephemeral range: a port the kernel handed out for listening
 * (port 0) comes from the same range as the local ports of outgoing
 * connections, so a busy test run could take it for a client socket before
 * the node bound it (EADDRINUSE). Falls back to port 0 when the range below
 * is too small.
 */
export async function freePorts(n: number): Promise<number[]> {
  const low = 10_000;
  const high = Math.min(ephemeralLow(), 65_536) - 1;
  const servers: Server[] = [];
  const ports = new Set<number>();
  for (let tries = 0; ports.size < n && tries < 50 * n && high - low > 1_000; tries++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (ports.has(port)) continue;
    const s = await bindable(port);
    if (s === undefined) continue;
    servers.push(s);
    ports.add(port);
  }
  while (ports.size < n) {
    const s = await bindable(0);
    if (s === undefined) throw new Error('cannot bind any port on 127.0.0.1');
    servers.push(s);
    ports.add((s.address() as { port: number }).port);
  }
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return [...ports];
}
