/**
 * Bad flags and bad files get a clear message and a non-zero exit before a
 * node starts: usage errors exit 2 with the usage text, a file that cannot be
 * used exits 1 naming what is wrong.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../helpers/spawnNode.js';
import { selfSigned } from '../helpers/tls.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'actorserve-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'node', '--port', '0', '--models', 'iris', ...args], { encoding: 'utf8', timeout: 30_000 });

describe('actorserve node, refusing to start', () => {
  it.each([
    [['--tls-ca', 'ca.pem'], '--tls-ca needs --tls-cert and --tls-key'],
    [['--tls-cert', 'cert.pem'], '--tls-cert and --tls-key go together'],
    [['--admin-token', 'a', '--admin-token-file', 'f'], 'give --admin-token or --admin-token-file, not both'],
    [['--client-ping-ms', 'soon'], '--client-ping-ms must be a non-negative integer'],
  ])('%j: exits 2 with the usage', (args, message) => {
    const r = run(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain('Usage');
  });

  it('exits 1 naming the problem for an admin tokens file that is missing or holds no token, and a key that is not the certificate\'s', () => {
    const missing = run(['--admin-token-file', join(dir, 'nope')]);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('ENOENT');
    writeFileSync(join(dir, 'empty'), '# none yet\n');
    const empty = run(['--admin-token-file', join(dir, 'empty')]);
    expect(empty.status).toBe(1);
    expect(empty.stderr).toContain(`${join(dir, 'empty')} holds no token`);

    const [a, b] = [selfSigned(dir, 'a'), selfSigned(dir, 'b')];
    const mismatched = run(['--tls-cert', a.cert, '--tls-key', b.key]);
    expect(mismatched.status).toBe(1);
    expect(mismatched.stderr).toContain("the private key is not the certificate's (CN=a)");
    expect(mismatched.stderr).not.toContain('PRIVATE KEY');
  });
});
