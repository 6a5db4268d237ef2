/**
 * Bearer tokens for clients and for the admin interface. Tokens are kept
 * only as SHA-256 digests and compared by digest, so lookups do not leak a
 * token's prefix through timing and no token sits in memory in the clear
 * longer than loading takes.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';

/** What a token is kept as: its SHA-256 digest. */
export const tokenDigest = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest();

export class TokenSet {
  private readonly digests: Buffer[];

  constructor(tokens: Iterable<string>) {
    this.digests = [...new Set(tokens)].filter((t) => t.length > 0).map(tokenDigest);
    if (this.digests.length === 0) throw new RangeError('a token set needs at least one non-empty token');
  }

  /** One token per line; blank lines and `#` comments are skipped. @throws when the file cannot be read or holds no token. */
  static fromFile(path: string): TokenSet {
    const tokens = tokensInFile(path);
    if (tokens.length === 0) throw new Error(`${path} holds no token (one per line; blank lines and # comments are skipped)`);
    return new TokenSet(tokens);
  }

  /** Tokens in the set. */
  get size(): number {
    return this.digests.length;
  }

  has(token: string | undefined): boolean {
    return token ? this.hasDigest(tokenDigest(token)) : false;
  }

  /** Whether the token whose {@link tokenDigest} this is belongs to the set. */
  hasDigest(d: Buffer): boolean {
    let found = false;
    // Compare against every digest, so the time does not depend on which one matches.
    for (const x of this.digests) found = timingSafeEqual(d, x) || found;
    return found;
  }
}

/** The tokens of a tokens file, in order: one per line, blank lines and `#` comments skipped. @throws when it cannot be read. */
export function tokensInFile(path: string): string[] {
  return readFileSync(path, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

/** The token of an `Authorization: Bearer …` header, if any. */
export function bearer(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  const m = h ? /^Bearer\s+(\S+)\s*$/i.exec(h) : null;
  return m?.[1];
}
