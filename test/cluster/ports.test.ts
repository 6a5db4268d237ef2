import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { freePorts } from '../../cluster/ports.js';

describe('freePorts', () => {
  it('returns distinct ports that can be bound, below the range the kernel gives outgoing connections', async () => {
    const ports = await freePorts(8);
    expect(new Set(ports).size).toBe(8);
    if (process.platform === 'linux') {
      const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
      for (const p of ports) expect(p).toBeLessThan(low);
    }
    for (const p of ports) {
      await new Promise<void>((resolve, reject) => {
        const s = createServer();
        s.once('error', reject);
        s.listen(p, '127.0.0.1', () => s.close(() => resolve()));
      });
    }
  });
});
