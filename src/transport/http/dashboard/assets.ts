/**
 * The dashboard's static files: the page, its script, and uPlot's script and
 * stylesheet from the installed `uplot` package (nothing from a CDN). Each is
 * read and gzipped once per process, named by a hash of its content so the
 * browser may keep it for a year, and answered with 304 to a matching
 * `If-None-Match`. The page itself is revalidated on every load (`no-cache`).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { APP_JS, pageHtml } from './page.js';

export interface Asset {
  body: Buffer;
  gzipped: Buffer;
  type: string;
  etag: string;
  cache: string;
}

export interface Assets {
  /** By request path. */
  byPath: Map<string, Asset>;
}

export const PAGE_PATH = '/dashboard';
const IMMUTABLE = 'public, max-age=31536000, immutable';

const gz = promisify(gzip);

async function asset(body: Buffer, type: string, cache: string): Promise<Asset> {
  const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
  return { body, gzipped: await gz(body, { level: 9 }), type, etag, cache };
}

const hashName = (a: Asset, name: string) => `${PAGE_PATH}/${a.etag.slice(1, 13)}-${name}`;

async function load(): Promise<Assets> {
  const dist = dirname(createRequire(import.meta.url).resolve('uplot'));
  const [uplotJs, uplotCss, app] = await Promise.all([
    readFile(join(dist, 'uPlot.iife.min.js')).then((b) => asset(b, 'text/javascript; charset=utf-8', IMMUTABLE)),
    readFile(join(dist, 'uPlot.min.css')).then((b) => asset(b, 'text/css; charset=utf-8', IMMUTABLE)),
    asset(Buffer.from(APP_JS), 'text/javascript; charset=utf-8', IMMUTABLE),
  ]);
  const paths = { uplotJs: hashName(uplotJs, 'uPlot.iife.min.js'), uplotCss: hashName(uplotCss, 'uPlot.min.css'), app: hashName(app, 'app.js') };
  const page = await asset(Buffer.from(pageHtml(paths)), 'text/html; charset=utf-8', 'no-cache');
  return {
    byPath: new Map([
      [PAGE_PATH, page],
      [`${PAGE_PATH}/`, page],
      [paths.uplotJs, uplotJs],
      [paths.uplotCss, uplotCss],
      [paths.app, app],
    ]),
  };
}

let loaded: Promise<Assets> | undefined;

/** The assets, loaded on first use; a failed load is retried on the next request. */
export function dashboardAssets(): Promise<Assets> {
  loaded ??= load().catch((e: unknown) => {
    loaded = undefined;
    throw e;
  });
  return loaded;
}

// Inline CSS only, scripts from this origin, sockets to any member of the cluster.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** Answers one GET or HEAD for an asset, gzipped when the browser accepts it. */
export function sendAsset(req: IncomingMessage, res: ServerResponse, a: Asset): void {
  const headers: Record<string, string | number> = {
    'content-type': a.type,
    'cache-control': a.cache,
    etag: a.etag,
    vary: 'accept-encoding',
    'x-content-type-options': 'nosniff',
  };
  if (a.type.startsWith('text/html')) headers['content-security-policy'] = CSP;
  if (req.headers['if-none-match'] === a.etag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  const gzipOk = /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''));
  const body = gzipOk ? a.gzipped : a.body;
  if (gzipOk) headers['content-encoding'] = 'gzip';
  headers['content-length'] = body.length;
  res.writeHead(200, headers);
  res.end(req.method === 'HEAD' ? undefined : body);
}
