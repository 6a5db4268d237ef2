/** Self-signed certificates for tests, made with openssl (as .ci/run installs it). */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * A fresh RSA key and a self-signed certificate for it, as `NAME-key.pem` and `NAME-cert.pem` in
 * `dir`: subject CN=`cn` (default NAME), valid for 127.0.0.1, for `days` (default 1).
 */
export function selfSigned(dir: string, name: string, { cn = name, days = 1 }: { cn?: string; days?: number } = {}): { cert: string; key: string } {
  const key = join(dir, `${name}-key.pem`);
  const cert = join(dir, `${name}-cert.pem`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', String(days),
    '-subj', `/CN=${cn}`, '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert, key };
}
