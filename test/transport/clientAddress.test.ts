import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { IncomingHttpHeaders } from 'node:http';
import { MAX_FORWARDED_HOPS, TrustedProxies, plainAddress } from '../../src/transport/clientAddress.js';

const from = (remoteAddress: string, forwarded?: string | string[]) => ({
  socket: { remoteAddress } as never,
  headers: (forwarded === undefined ? {} : { 'x-forwarded-for': forwarded }) as IncomingHttpHeaders,
});

describe('trusted proxies', () => {
  const proxies = new TrustedProxies(['10.0.0.0/8', '192.0.2.7', 'fd00::/8']);

  it('takes the rightmost address of X-Forwarded-For that is not a trusted proxy, when a trusted proxy sent it', () => {
    expect(proxies.clientAddress(from('10.1.2.3', '198.51.100.9'))).toBe('198.51.100.9');
    // The client wrote its own entry first; the proxies appended theirs: the first untrusted one from the right counts.
    expect(proxies.clientAddress(from('10.1.2.3', '1.1.1.1, 198.51.100.9, 10.9.9.9, 192.0.2.7'))).toBe('198.51.100.9');
    expect(proxies.clientAddress(from('::ffff:10.1.2.3', '2001:db8::5'))).toBe('2001:db8::5');
    expect(proxies.clientAddress(from('fd12::1', ' ::ffff:203.0.113.4 '))).toBe('203.0.113.4');
    // Two X-Forwarded-For headers read as one list.
    expect(proxies.clientAddress(from('10.1.2.3', ['203.0.113.1', '10.2.2.2']))).toBe('203.0.113.1');
  });

  it('keeps the trusted hop when nothing to its left can be believed or there is no header', () => {
    expect(proxies.clientAddress(from('10.1.2.3'))).toBe('10.1.2.3');
    expect(proxies.clientAddress(from('10.1.2.3', ''))).toBe('10.1.2.3');
    expect(proxies.clientAddress(from('10.1.2.3', 'unknown'))).toBe('10.1.2.3');
    expect(proxies.clientAddress(from('10.1.2.3', '198.51.100.9, 10.5.5.5, not-an-ip'))).toBe('10.1.2.3');
    expect(proxies.clientAddress(from('10.1.2.3', '198.51.100.9:4431, 10.5.5.5'))).toBe('10.5.5.5');
    // Every hop trusted: the leftmost one.
    expect(proxies.clientAddress(from('10.1.2.3', '10.7.7.7, 192.0.2.7'))).toBe('10.7.7.7');
  });

  it(`reads no more than the last ${MAX_FORWARDED_HOPS} entries of a long header`, () => {
    const trustedHops = Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}`);
    expect(proxies.clientAddress(from('10.1.2.3', ['198.51.100.9', ...trustedHops].join(',')))).toBe(`10.0.0.${40 - MAX_FORWARDED_HOPS + 1}`);
  });

  it('invariant: a peer that is not a trusted proxy is counted by its own address, whatever its header says', () => {
    const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((p) => p.join('.'));
    const entry = fc.oneof(ipv4, fc.ipV6(), fc.string({ maxLength: 20 }));
    fc.assert(
      fc.property(ipv4.filter((a) => !proxies.trusts(a)), fc.array(entry, { maxLength: 40 }), (peer, header) => {
        expect(proxies.clientAddress(from(peer, header.join(',')))).toBe(peer);
      }),
      { numRuns: 300 },
    );
  });

  it('trusts nothing by default and refuses an entry that is neither an address nor a CIDR block', () => {
    const none = new TrustedProxies([]);
    expect(none.clientAddress(from('127.0.0.1', '198.51.100.9'))).toBe('127.0.0.1');
    for (const bad of ['10.0.0.0/33', 'fd00::/129', '10.0.0.0/8/1', 'proxy.local', '10.0.0.0/x', '']) {
      expect(() => new TrustedProxies([bad]), bad).toThrow(RangeError);
    }
    expect(new TrustedProxies(['::1']).trusts('::1')).toBe(true);
    expect(new TrustedProxies(['127.0.0.0/8']).trusts('::ffff:127.0.0.9')).toBe(true);
  });

  it('reads an address without its IPv4-mapped prefix or IPv6 zone', () => {
    expect(plainAddress('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(plainAddress('fe80::1%eth0')).toBe('fe80::1');
    expect(plainAddress(' 2001:db8::1 ')).toBe('2001:db8::1');
  });
});
