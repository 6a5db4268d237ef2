/**
 * Access control with real node processes: client tokens (header or hello
 * frame), the admin token, TLS for clients and peers, and no secret in logs.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { decodeUntrusted, encode } from '../../src/transport/codec.js';
import type { ErrorFrame, ServerFrame } from '../../src/transport/protocol.js';
import { irisInput } from '../helpers/RawClient.js';
import { eventually, freePorts } from '../helpers/cluster.js';
import { metric } from '../helpers/metrics.js';
import { spawnNode, type NodeProcess } from '../helpers/spawnNode.js';

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

  it('never writes a token or the cluster secret to the logs', () => {
    expect(node.lines.length).toBeGreaterThan(5);
    const text = node.lines.map((l) => JSON.stringify(l)).join('\n');
    for (const secret of Object.values(SECRETS)) expect(text).not.toContain(secret);
  });
});

describe('TLS', () => {
  it('serves wss:// to clients and links peers over wss:// when given a certificate', async () => {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
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
