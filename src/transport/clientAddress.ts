/**
 * Which address a client is counted by when it reaches the node through
 * proxies the operator trusts (`--trusted-proxies`): a load balancer or an
 * ingress in front of the nodes makes every HTTP caller and WebSocket client
 * come from the proxy's few addresses, so per-address fairness (a share of a
 * model's queue, `--max-connections-per-address`) would count them all as one.
 *
 * From a trusted peer, the client is the rightmost address of
 * `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends
 * the address it was reached from). From any other peer the header is
 * ignored, since a client can write whatever it likes there. An entry that
 * is not an IP address ends the walk at the last trusted hop: nothing left of
 * it can be believed. Only the header's last {@link MAX_FORWARDED_HOPS}
 * entries are read.
 *
 * Never used for anything that grants access (the admin interface's
 * this-machine check reads the socket's own address).
 */
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

export const MAX_FORWARDED_HOPS = 32;

/** An address as a socket or a header gives it, without an IPv4-mapped IPv6 prefix or an IPv6 zone. */
export function plainAddress(address: string): string {
  const bare = address.trim().split('%')[0]!;
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare) ? bare.slice(7) : bare;
}

const family = (address: string) => (isIP(address) === 6 ? 'ipv6' : 'ipv4');

export class TrustedProxies {
  private readonly list = new BlockList();

  /**
   * @param entries IP addresses and CIDR blocks (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`)
   * @throws RangeError for an entry that is neither
   */
  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const [net = '', prefix, extra] = entry.trim().split('/');
      const address = plainAddress(net);
      const bits = isIP(address) === 6 ? 128 : 32;
      const length = prefix === undefined ? bits : /^\d{1,3}$/.test(prefix) ? Number(prefix) : Number.NaN;
      if (isIP(address) === 0 || extra !== undefined || !(length >= 0 && length <= bits)) {
        throw new RangeError(`trusted proxy must be an IP address or a CIDR block, got ${JSON.stringify(entry)}`);
      }
      this.list.addSubnet(address, length, family(address));
    }
  }

  trusts(address: string): boolean {
    const a = plainAddress(address);
    return isIP(a) !== 0 && this.list.check(a, family(a));
  }

  /** The address `req`'s client is counted by (see the module comment). */
  clientAddress(req: Pick<IncomingMessage, 'headers' | 'socket'>): string {
    let current = plainAddress(req.socket.remoteAddress ?? '');
    if (!this.trusts(current)) return current;
    const header = req.headers['x-forwarded-for'];
    const value = Array.isArray(header) ? header.join(',') : header;
    if (!value) return current;
    const hops = value.split(',');
    for (let i = hops.length - 1; i >= Math.max(0, hops.length - MAX_FORWARDED_HOPS); i--) {
      const hop = plainAddress(hops[i]!);
      if (isIP(hop) === 0) return current;
      current = hop;
      if (!this.trusts(hop)) return hop;
    }
    return current;
  }
}
