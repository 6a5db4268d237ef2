/**
 * Access control with real node processes: client tokens (header or hello
 * frame), the admin token, TLS for clients and peers, and no secret in logs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { get as httpsGet } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import type { ErrorFrame, ServerFrame } from '../../src/transport/protocol.js';
import { irisInput } from '../helpers/RawClient.js';
import { eventually, freePorts } from '../helpers/cluster.js';
import { metric } from '../helpers/metrics.js';
import { BIN, spawnNode, type NodeProcess } from '../helpers/spawnNode.js';
import { selfSigned as selfSignedIn } from '../helpers/tls.js';

const SECRETS = { clientA: 'tok-alpha-7f3e', clientB: 'tok-bravo-91c2', admin: 'adm-secret-55d1', cluster: 'clu-secret-0b9a' };
const started: NodeProcess[] = [];
let dir: string;
let node: NodeProcess;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'actorserve-sec-'));
  node = await spawnNode(['--port', '0', '--node-id', 'sec', '--models', 'iris', '--log-level', 'debug'], 60_000, {
    ACTORSERVE_AUTH_TOKENS: `${SECRETS.clientA},${SECRETS.clientB}`,
    ACTORSERVE_ADMIN_TOKEN: SECRETS.admin,
    ACTORSERVE_CLUSTER_SECRET: SECRETS.cluster,
  });
  started.push(node);
});
afterAll(async () => {
  await Promise.all(started.map((n) => n.stop('SIGKILL')));
  rmSync(dir, { recursive: true, force: true });
});

/** Opens a socket and collects frames until it closes. */
function open(url: string, headers: Record<string, string> = {}, extra: WebSocket.ClientOptions = {}) {
  const ws = new WebSocket(url, { headers, ...extra });
  const frames: ServerFrame[] = [];
  ws.on('message', (d: Buffer) => frames.push(decodeUntrusted(d) as ServerFrame));
  const closed = new Promise<{ code: number; status?: number | undefined }>((resolve) => {
    ws.on('unexpected-response', (_req, res) => resolve({ code: -1, status: res.statusCode }));
    ws.on('close', (code) => resolve({ code }));
    ws.on('error', () => undefined);
  });
  const opened = new Promise<boolean>((resolve) => {
    ws.once('open', () => resolve(true));
    void closed.then(() => resolve(false));
  });
  return { ws, frames, closed, opened };
}

describe('client tokens', () => {
  it('refuses a wrong bearer token at the upgrade with 401, before any WebSocket exists', async () => {
    const refused = () => metric(node.port, 'actorserve_client_connections_refused_total', 'reason="unauthorized"').then((n) => n || 0);
    const before = await refused();
    const c = open(node.url, { authorization: `Bearer not-a-token` });
    expect(await c.closed).toEqual({ code: -1, status: 401 });
    expect(await refused()).toBe(before + 1);
  });

  it('serves a client with a valid bearer token', async () => {
    const ws = open(node.url, { authorization: `Bearer ${SECRETS.clientB}` });
    expect(await ws.opened).toBe(true);
    await eventually(async () => ws.frames.length > 0, 5_000);
    expect(ws.frames[0]!.t).toBe('welcome');
    ws.ws.send(encode({ t: 'infer', id: 1, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) }));
    await eventually(async () => ws.frames.length > 1, 5_000);
    expect(ws.frames[1]!.t).toBe('result');
    ws.ws.close();
  });

  it('lets a browser-style client authenticate with a first hello frame, and answers anything else unauthorized and closes with 1008', async () => {
    const good = open(node.url);
    expect(await good.opened).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(good.frames).toEqual([]); // no welcome before the hello
    good.ws.send(encode({ t: 'hello', token: SECRETS.clientA }));
    await eventually(async () => good.frames.length > 0, 5_000);
    expect(good.frames[0]!.t).toBe('welcome');
    good.ws.close();

    const refused = () => metric(node.port, 'actorserve_client_connections_refused_total', 'reason="unauthorized"').then((n) => n || 0);
    const before = await refused();
    for (const first of [{ t: 'infer', id: 1, model: 'iris', inputs: irisInput([1, 2, 3, 4]) }, { t: 'hello', token: 'guess' }]) {
      const bad = open(node.url);
      await bad.opened;
      bad.ws.send(encode(first));
      expect((await bad.closed).code).toBe(1008);
      expect(bad.frames.map((f) => (f as ErrorFrame).code)).toEqual(['unauthorized']);
    }
    expect(await refused()).toBe(before + 2);
  });

  it('requires a client token on the HTTP infer endpoint too', async () => {
    const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [5.1, 3.5, 1.4, 0.2] }] });
    const url = `http://127.0.0.1:${node.port}/v2/models/iris/infer`;
    expect((await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json' } })).status).toBe(401);
    const ok = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Bearer ${SECRETS.clientA}` } });
    expect(ok.status).toBe(200);
  });
});

describe('rotating client tokens', () => {
  it('SIGHUP re-reads --auth-tokens: a revoked token\'s connection is answered unauthorized and closed, the others keep working, and a file without tokens changes nothing', async () => {
    const ROTATION = { kept: 'tok-kept-3a9d', revoked: 'tok-revoked-c41e', added: 'tok-added-88f0' };
    const file = join(dir, 'tokens');
    writeFileSync(file, `# clients\n${ROTATION.kept}\n${ROTATION.revoked}\n`);
    const n = await spawnNode(['--port', '0', '--node-id', 'rot', '--models', 'iris', '--log-level', 'debug', '--auth-tokens', file], 60_000);
    started.push(n);
    const hup = () => process.kill(n.proc.pid!, 'SIGHUP');
    const logged = (msg: string) => eventually(async () => n.lines.some((l) => (l as { msg?: string }).msg === msg), 5_000);
    const infer = async (c: ReturnType<typeof open>, id: number) => {
      c.ws.send(encode({ t: 'infer', id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) }));
      await eventually(async () => c.frames.some((f) => f.t === 'result' && f.id === id), 5_000);
    };
    const revoked = open(n.url, { authorization: `Bearer ${ROTATION.revoked}` });
    const kept = open(n.url);
    expect(await kept.opened).toBe(true);
    kept.ws.send(encode({ t: 'hello', token: ROTATION.kept }));
    expect(await revoked.opened).toBe(true);
    await infer(revoked, 1);
    await infer(kept, 1);

    writeFileSync(file, `${ROTATION.kept}\n${ROTATION.added}\n`);
    hup();
    expect((await revoked.closed).code).toBe(1008);
    expect(revoked.frames.at(-1)).toMatchObject({ t: 'error', id: null, code: 'unauthorized' });
    await infer(kept, 2);
    expect(await metric(n.port, 'actorserve_client_connections_closed_total', 'reason="token_revoked"')).toBe(1);
    expect(await open(n.url, { authorization: `Bearer ${ROTATION.revoked}` }).closed).toEqual({ code: -1, status: 401 });
    const added = open(n.url, { authorization: `Bearer ${ROTATION.added}` });
    expect(await added.opened).toBe(true);
    await infer(added, 1);
    const body = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: [5.1, 3.5, 1.4, 0.2] }] });
    const http = (token: string) => fetch(`http://127.0.0.1:${n.port}/v2/models/iris/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } });
    expect((await http(ROTATION.revoked)).status).toBe(401);
    expect((await http(ROTATION.added)).status).toBe(200);

    // A file with no token in it (a half-written rotation) is not applied: everyone keeps working.
    writeFileSync(file, '# nothing yet\n');
    hup();
    await logged('client tokens not reloaded; the ones in use stay');
    await infer(added, 2);
    await infer(kept, 3);
    expect((await http(ROTATION.kept)).status).toBe(200);
    expect(n.proc.exitCode).toBe(null);

    added.ws.close();
    kept.ws.close();
    expect(await n.stop('SIGTERM')).toBe(0);
    const text = n.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const secret of Object.values(ROTATION)) expect(text).not.toContain(secret);
  });
});

describe('the admin token', () => {
  it('refuses admin calls with a wrong or missing token, and a right one makes the node leave and exit 0', async () => {
    const leave = `http://127.0.0.1:${node.port}/v1/admin/leave`;
    expect((await fetch(leave, { method: 'POST' })).status).toBe(401);
    expect((await fetch(leave, { method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${node.port}/v2/health/ready`)).status).toBe(200);
    expect((await fetch(leave, { method: 'POST', headers: { authorization: `Bearer ${SECRETS.admin}` } })).status).toBe(202);
    expect(await node.stop('SIGTERM')).toBe(0);
  });

  it('--admin-token-file: SIGHUP replaces the admin tokens, a file without one changes nothing, and `actorserve leave` calls with the file\'s first', async () => {
    const ADMIN = { old: 'adm-old-6d2a', next: 'adm-next-b7e1' };
    const file = join(dir, 'admin-tokens');
    writeFileSync(file, `${ADMIN.old}\n`);
    const n = await spawnNode(['--port', '0', '--node-id', 'adm', '--models', 'iris', '--chaos', '--admin-token-file', file], 60_000);
    started.push(n);
    const logged = (msg: string) => eventually(async () => n.lines.some((l) => (l as { msg?: string }).msg === msg), 5_000);
    // A chaos call with a body that is not JSON: 400 once the token is taken, 401 before that.
    const admin = (token: string) =>
      fetch(`http://127.0.0.1:${n.port}/v1/admin/chaos`, { method: 'POST', body: '{', headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
    expect(await admin(ADMIN.old)).toBe(400);
    expect(await admin(ADMIN.next)).toBe(401);

    writeFileSync(file, `# rotated\n${ADMIN.next}\n`);
    process.kill(n.proc.pid!, 'SIGHUP');
    await logged('admin tokens replaced');
    expect(await admin(ADMIN.old)).toBe(401);
    expect(await admin(ADMIN.next)).toBe(400);

    writeFileSync(file, '');
    process.kill(n.proc.pid!, 'SIGHUP');
    await logged('admin tokens not reloaded; the ones in use stay');
    expect(await admin(ADMIN.next)).toBe(400);

    writeFileSync(file, `${ADMIN.next}\n${ADMIN.old}\n`);
    const leave = spawnSync(process.execPath, [BIN, 'leave', '--port', String(n.port), '--admin-token-file', file], { encoding: 'utf8', timeout: 30_000 });
    expect(leave.stderr).toBe('');
    expect(leave.status).toBe(0);
    expect(await n.stop('SIGTERM')).toBe(0);
    const text = n.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const secret of Object.values(ADMIN)) expect(text).not.toContain(secret);
  });

  it('never writes a token or the cluster secret to the logs', () => {
    expect(node.lines.length).toBeGreaterThan(5);
    const text = node.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const secret of Object.values(SECRETS)) expect(text).not.toContain(secret);
  });
});

/** A fresh self-signed certificate for 127.0.0.1 and its key, as files in the test's directory. */
const selfSigned = (name: string) => selfSignedIn(dir, name, { cn: '127.0.0.1' });

const fingerprint = (certFile: string) => new X509Certificate(readFileSync(certFile)).fingerprint256;

/** The SHA-256 fingerprint of the certificate a TLS handshake with the port is served now. */
function servedFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}

/** GET over https, trusting only `ca`. */
function getTrusting(ca: Buffer, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpsGet({ host: '127.0.0.1', port, path, ca }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

describe('TLS', () => {
  it('serves wss:// to clients and links peers over wss:// when given a certificate', async () => {
    const { cert, key } = selfSigned('tls');
    const [p1, p2] = await freePorts(2);
    const tlsArgs = ['--tls-cert', cert, '--tls-key', key, '--tls-ca', cert];
    const env = { ACTORSERVE_CLUSTER_SECRET: SECRETS.cluster };
    const seeds = `127.0.0.1:${p1},127.0.0.1:${p2}`;
    const [a, b] = await Promise.all([
      spawnNode(['--port', String(p1), '--node-id', 't1', '--models', 'iris', '--seeds', seeds, ...tlsArgs], 60_000, env),
      spawnNode(['--port', String(p2), '--node-id', 't2', '--models', 'iris', '--seeds', seeds, ...tlsArgs], 60_000, env),
    ]);
    started.push(a, b);
    const ca = readFileSync(cert);
    const c = open(`wss://127.0.0.1:${p1}/v1/stream`, {}, { ca });
    expect(await c.opened).toBe(true);
    await eventually(async () => c.frames.length > 0, 5_000);
    expect(c.frames[0]!.t).toBe('welcome');
    c.ws.close();
    const plain = open(`ws://127.0.0.1:${p1}/v1/stream`);
    expect(await plain.opened).toBe(false);
    // The two nodes found each other over wss. fetch takes no per-call CA, so ask from a child that trusts the cert.
    await eventually(async () => {
      const out = execFileSync(process.execPath, ['-e', `fetch('https://127.0.0.1:${p1}/v1/cluster').then(r=>r.json()).then(j=>console.log(j.members.filter(m=>m.status==='up'&&m.linked).length))`],
        { env: { ...process.env, NODE_EXTRA_CA_CERTS: cert }, encoding: 'utf8' });
      return out.trim() === '2';
    }, 10_000, 200);
  });
});

describe('rotating the TLS certificate', () => {
  it('SIGHUP serves a renewed certificate to new connections, keeps open ones, dials peers trusting the new CA, and refuses a key that is not the certificate\'s', async () => {
    const [a, b, c] = [selfSigned('rot-a'), selfSigned('rot-b'), selfSigned('rot-c')];
    // The node reads these three paths at start and on every SIGHUP; the test installs a certificate by copying it there.
    const live = { cert: join(dir, 'live-cert.pem'), key: join(dir, 'live-key.pem'), ca: join(dir, 'live-ca.pem') };
    const install = (cert: string, key: string) => {
      copyFileSync(cert, live.cert);
      copyFileSync(key, live.key);
      copyFileSync(cert, live.ca);
    };
    install(a.cert, a.key);
    const [p1, p2] = await freePorts(2);
    const tlsArgs = ['--tls-cert', live.cert, '--tls-key', live.key, '--tls-ca', live.ca];
    const env = { ACTORSERVE_CLUSTER_SECRET: SECRETS.cluster };
    // r1 dials r2 before r2 exists and keeps retrying: the dial that succeeds must verify r2's certificate (b) with the CA r1 read on SIGHUP.
    const n1 = await spawnNode(['--port', String(p1), '--node-id', 'r1', '--models', 'iris', '--seeds', `127.0.0.1:${p2}`, ...tlsArgs], 60_000, env);
    started.push(n1);
    const logged = (msg: string) => eventually(async () => n1.lines.some((l) => (l as { msg?: string }).msg === msg), 5_000);
    const infer = async (conn: ReturnType<typeof open>, id: number) => {
      conn.ws.send(encode({ t: 'infer', id, model: 'iris', inputs: irisInput([5.1, 3.5, 1.4, 0.2]) }));
      await eventually(async () => conn.frames.some((f) => f.t === 'result' && f.id === id), 5_000);
    };
    const url = `wss://127.0.0.1:${p1}/v1/stream`;
    const expiryFingerprints = async (ca: Buffer) =>
      [...(await getTrusting(ca, p1, '/metrics')).matchAll(/^actorserve_tls_certificate_expiry_seconds\{[^}]*fingerprint="([^"]+)"[^}]*\} (\d+)$/gm)].map((m) => m[1]);

    expect(await servedFingerprint(p1)).toBe(fingerprint(a.cert));
    const listening = n1.lines.find((l) => (l as { msg?: string }).msg === 'listening') as { certificate?: { fingerprint256: string } };
    expect(listening.certificate?.fingerprint256).toBe(fingerprint(a.cert));
    expect(await expiryFingerprints(readFileSync(a.cert))).toEqual([fingerprint(a.cert)]);
    const before = open(url, {}, { ca: readFileSync(a.cert) });
    expect(await before.opened).toBe(true);
    await infer(before, 1);

    install(b.cert, b.key);
    process.kill(n1.proc.pid!, 'SIGHUP');
    await logged('TLS certificate replaced');
    expect(await servedFingerprint(p1)).toBe(fingerprint(b.cert));
    await infer(before, 2);
    const after = open(url, {}, { ca: readFileSync(b.cert) });
    expect(await after.opened).toBe(true);
    await infer(after, 1);
    expect(await open(url, {}, { ca: readFileSync(a.cert) }).opened).toBe(false);
    expect(await expiryFingerprints(readFileSync(b.cert))).toEqual([fingerprint(b.cert)]);

    const n2 = await spawnNode(['--port', String(p2), '--node-id', 'r2', '--models', 'iris', ...tlsArgs], 60_000, env);
    started.push(n2);
    await eventually(async () => {
      const view = JSON.parse(await getTrusting(readFileSync(b.cert), p1, '/v1/cluster')) as { members: { nodeId: string; linked: boolean }[] };
      return view.members.some((m) => m.nodeId === 'r2' && m.linked);
    }, 15_000, 200);

    // A key that is not the certificate's (a renewal copied half) is not applied: the node serves b on.
    install(c.cert, b.key);
    process.kill(n1.proc.pid!, 'SIGHUP');
    await logged('TLS certificate not reloaded; the one in use stays');
    expect(await servedFingerprint(p1)).toBe(fingerprint(b.cert));
    await infer(before, 3);
    await infer(after, 2);
    expect(n1.proc.exitCode).toBe(null);

    before.ws.close();
    after.ws.close();
    expect(await n2.stop('SIGTERM')).toBe(0);
    expect(await n1.stop('SIGTERM')).toBe(0);
    const text = n1.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const k of [a.key, b.key, c.key]) {
      const body = readFileSync(k, 'utf8').split('\n').filter((l) => l && !l.startsWith('-----'));
      for (const line of body) expect(text).not.toContain(line);
    }
    expect(text).not.toContain('PRIVATE KEY');
  });
});
