/**
 * The certificate a node serves, checked before it is used: at start, and
 * again when SIGHUP brings a renewed one (certificates expire; a node should
 * not have to restart, dropping its clients, to take the next one).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** PEM certificate (the first is the node's own, any after it its chain) and key; `ca` verifies the peers. */
export interface TlsMaterial {
  cert: string | Buffer;
  key: string | Buffer;
  ca?: string | Buffer;
}

/** What a log line or a metric may say of a certificate: public facts only. */
export interface CertificateInfo {
  subject: string;
  fingerprint256: string;
  validTo: string;
  /** Unix time, seconds, at which the certificate expires. */
  expiresAt: number;
}

/**
 * Checks that the key is the certificate's and describes the certificate.
 * @throws Error naming what is wrong: a PEM that does not parse, or a key that is not the certificate's.
 */
export function checkCertificate(tls: TlsMaterial): CertificateInfo {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(tls.cert);
  } catch (e) {
    throw new Error(`the certificate does not parse: ${(e as Error).message}`);
  }
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(tls.key));
  } catch (e) {
    // The key's own bytes never go into the message: it is a secret.
    throw new Error(`the private key does not parse: ${(e as Error).message}`);
  }
  const subject = cert.subject.replace(/\n/g, ', ');
  if (!matches) throw new Error(`the private key is not the certificate's (${subject})`);
  return {
    subject,
    fingerprint256: cert.fingerprint256,
    validTo: cert.validTo,
    expiresAt: Math.floor(Date.parse(cert.validTo) / 1000),
  };
}

/**
 * Reads `--tls-cert`, `--tls-key` and `--tls-ca`, every file before any is used; the node checks
 * the set ({@link checkCertificate}) before it serves it, so a rotation half written fails whole.
 * @throws Error when a file cannot be read.
 */
export function readTlsFiles(files: { cert: string; key: string; ca?: string | undefined }): TlsMaterial {
  return { cert: readFileSync(files.cert), key: readFileSync(files.key), ...(files.ca ? { ca: readFileSync(files.ca) } : {}) };
}
