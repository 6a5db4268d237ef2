/**
 * The check a certificate passes before a node serves it (at start and on
 * SIGHUP): the key must be the certificate's, and a refusal says why without
 * the key's bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkCertificate, readTlsFiles } from '../../src/transport/Tls.js';
import { selfSigned } from '../helpers/tls.js';

let dir: string;
const pair = (name: string) => selfSigned(dir, name, { days: 2 });
let a: { cert: string; key: string };
let b: { cert: string; key: string };

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'actorserve-tls-'));
  a = pair('alpha');
  b = pair('bravo');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('checkCertificate', () => {
  it('describes a certificate whose key matches: subject, fingerprint and expiry', () => {
    const info = checkCertificate(readTlsFiles(a));
    const x = new X509Certificate(readFileSync(a.cert));
    expect(info.subject).toBe('CN=alpha');
    expect(info.fingerprint256).toBe(x.fingerprint256);
    expect(info.expiresAt).toBe(Math.floor(Date.parse(x.validTo) / 1000));
    // Two days from now, give or take the clock between openssl and here.
    expect(Math.abs(info.expiresAt - (Date.now() / 1000 + 2 * 86_400))).toBeLessThan(600);
  });

  it('refuses a key that is not the certificate\'s, naming the certificate', () => {
    expect(() => checkCertificate(readTlsFiles({ cert: a.cert, key: b.key }))).toThrow(/the private key is not the certificate's \(CN=alpha\)/);
  });

  it('refuses what does not parse, and never puts the key\'s bytes in the message', () => {
    const key = readFileSync(a.key, 'utf8');
    expect(() => checkCertificate({ cert: 'not a certificate', key })).toThrow(/the certificate does not parse/);
    const broken = key.replace(/\n[A-Za-z0-9+/]{10}/, '\n!!!!!!!!!!');
    let message = '';
    try {
      checkCertificate({ cert: readFileSync(a.cert), key: broken });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/the private key does not parse/);
    for (const line of key.split('\n').filter((l) => l && !l.startsWith('-----'))) expect(message).not.toContain(line);
  });

  it('fails the whole set when any file is missing or empty', () => {
    writeFileSync(join(dir, 'empty'), '');
    expect(() => readTlsFiles({ ...a, ca: join(dir, 'no-such-ca.pem') })).toThrow(/ENOENT/);
    expect(() => checkCertificate(readTlsFiles({ cert: join(dir, 'empty'), key: a.key }))).toThrow(/the certificate does not parse/);
  });
});
