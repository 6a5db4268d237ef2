/** Local-machine helpers shared by the launcher, the chaos suite, the bench, the examples and the tests. */
import { createServer, type Server } from 'node:net';

/** Ports that were free a moment ago on 127.0.0.1: binds port 0 `n` times at once, reads the ports, closes. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<Server>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => resolve(s));
    })),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}
