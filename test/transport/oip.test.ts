/**
 * The Open Inference Protocol (KServe v2) REST API: against a real node with
 * the real models (metadata, readiness, inference equal to the WebSocket
 * path, every refusal), and against a stub context for what a healthy node
 * cannot be made to answer (each error code, the frame handed to submit).
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ActorserveNode } from '../../src/actors/Node.js';
import type { ErrorCode } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import type { Metrics } from '../../src/metrics/Metrics.js';
import { resolveModels } from '../../src/models/registry.js';
import type { NodeContext } from '../../src/transport/http/context.js';
import { handleOip } from '../../src/transport/http/oip.js';
import type { ErrorFrame, InferFrame, ResultFrame } from '../../src/transport/protocol.js';
import { RawClient, f32, irisInput, readF32 } from '../helpers/RawClient.js';

const IRIS_ROW = [5.1, 3.5, 1.4, 0.2];
const IMG = 3 * 48 * 192;

interface Reply {
  status: number;
  headers: Headers;
  body: any;
}

const call = async (url: string, init: RequestInit = {}): Promise<Reply> => {
  const r = await fetch(url, init);
  const text = await r.text();
  return { status: r.status, headers: r.headers, body: text === '' ? undefined : JSON.parse(text) };
};

const postJson = (url: string, body: unknown, contentType: string | undefined = 'application/json') =>
  call(url, {
    method: 'POST',
    ...(contentType !== undefined ? { headers: { 'content-type': contentType } } : {}),
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

const irisBody = (extra: Record<string, unknown> = {}, tensor: Record<string, unknown> = {}) => ({
  inputs: [{ name: 'input', shape: [1, 4], datatype: 'FP32', data: IRIS_ROW, ...tensor }],
  ...extra,
});

/** A deterministic pseudo-random text-orientation image, as in the integration tests. */
const image = (seed: number) => {
  const a = new Float32Array(IMG);
  let s = seed >>> 0;
  for (let i = 0; i < IMG; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    a[i] = s / 2 ** 32 - 0.5;
  }
  return a;
};

/** [1, 3, 48, 192] nested arrays of the image's values. */
const nestedImage = (a: Float32Array) =>
  [Array.from({ length: 3 }, (_, c) => Array.from({ length: 48 }, (_, y) => Array.from(a.subarray(c * 48 * 192 + y * 192, c * 48 * 192 + (y + 1) * 192))))];

const asResult = (f: ResultFrame | ErrorFrame): ResultFrame => {
  if (f.t !== 'result') throw new Error(`expected a result, got ${f.code}: ${f.message}`);
  return f;
};

/** A raw request, for what fetch will not do: declare a length it never sends, stream a chunked body, hang up mid-body. */
function rawPost(port: number, path: string, headers: Record<string, string>) {
  const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers, agent: false });
  req.on('error', () => undefined); // the server may close while we still write; the response is what is tested
  const response = new Promise<{ status: number; headers: IncomingMessage['headers']; body: string }>((resolve) => {
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
  });
  return { req, response };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sum of actorserve_requests_total samples whose labels include every given label. */
async function requestsTotal(base: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(/^actorserve_requests_total\{([^}]*)\} (\S+)$/gm)) {
    if (Object.entries(labels).every(([k, v]) => m[1]!.includes(`${k}="${v}"`))) sum += Number(m[2]);
  }
  return sum;
}

describe('the OIP REST API on a real node', () => {
  let node: ActorserveNode;
  let base: string;
  let irisOk = 0; // successful HTTP iris inferences made by these tests

  beforeAll(async () => {
    node = await ActorserveNode.start({
      nodeId: 'oip',
      port: 0,
      models: resolveModels(['iris', 'text-orientation']),
      log: createLogger({ level: 'silent' }),
    });
    base = `http://127.0.0.1:${node.port}`;
  });
  afterAll(async () => {
    await node?.stop();
  });

  const inferIris = async (body: unknown, path = '/v2/models/iris/infer') => {
    const r = await postJson(base + path, body);
    if (r.status === 200) irisOk++;
    return r;
  };

  describe('metadata and readiness', () => {
    it('GET /v2 names the server, its package version and no extensions', async () => {
      const r = await call(`${base}/v2`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('application/json');
      expect(r.body).toEqual({ name: 'actorserve', version: '0.1.0', extensions: [] });
    });

    it('GET /v2/models/{m} describes the model with OIP datatypes and -1 for the batch dimension', async () => {
      const r = await call(`${base}/v2/models/iris`);
      expect(r.status).toBe(200);
      expect(r.body).toEqual({
        name: 'iris',
        versions: ['1'],
        platform: 'onnxruntime',
        inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 4] }],
        outputs: [{ name: 'probabilities', datatype: 'FP32', shape: [-1, 3] }],
      });
    });

    it('GET /v2/models/{m}/versions/{v} describes the served version and is 404 for any other', async () => {
      const ok = await call(`${base}/v2/models/text-orientation/versions/1`);
      expect(ok.status).toBe(200);
      expect(ok.body.inputs).toEqual([{ name: 'x', datatype: 'FP32', shape: [-1, 3, 48, 192] }]);
      expect(ok.body.outputs).toEqual([{ name: 'softmax_0.tmp_0', datatype: 'FP32', shape: [-1, 2] }]);
      const other = await call(`${base}/v2/models/iris/versions/2`);
      expect(other.status).toBe(404);
      expect(other.body.error).toMatch(/no version "2"/);
    });

    it('an unknown model is 404 with a JSON error on metadata, ready and infer', async () => {
      for (const r of [
        await call(`${base}/v2/models/nope`),
        await call(`${base}/v2/models/nope/ready`),
        await postJson(`${base}/v2/models/nope/infer`, irisBody()),
      ]) {
        expect(r.status).toBe(404);
        expect(r.body).toEqual({ error: 'model "nope" is not served' });
      }
    });

    it('GET /v2/models/{m}/ready is 200 for a loaded model, with or without a version, and 404 for an unknown version', async () => {
      const plain = await call(`${base}/v2/models/iris/ready`);
      expect(plain.status).toBe(200);
      expect(plain.body).toEqual({ name: 'iris', ready: true });
      expect((await call(`${base}/v2/models/text-orientation/versions/1/ready`)).status).toBe(200);
      expect((await call(`${base}/v2/models/iris/versions/9/ready`)).status).toBe(404);
    });

    it('model names are percent-decoded, and a malformed percent-escape is 400', async () => {
      const r = await call(`${base}/v2/models/text%2Dorientation`);
      expect(r.status).toBe(200);
      expect(r.body.name).toBe('text-orientation');
      const bad = await call(`${base}/v2/models/ir%ZZis/ready`);
      expect(bad.status).toBe(400);
      expect(bad.body.error).toMatch(/percent-escape/);
    });

    it('a wrong method on a known path is 405 with Allow', async () => {
      const cases: [string, string, string][] = [
        ['POST', '/v2', 'GET'],
        ['PUT', '/v2/models/iris', 'GET'],
        ['DELETE', '/v2/models/iris/versions/1/ready', 'GET'],
        ['GET', '/v2/models/iris/infer', 'POST'],
        ['PUT', '/v2/models/iris/versions/1/infer', 'POST'],
        ['POST', '/v2/health/live', 'GET'],
        ['POST', '/v2/health/ready', 'GET'],
      ];
      for (const [method, path, allow] of cases) {
        const r = await call(base + path, { method });
        expect([method, path, r.status]).toEqual([method, path, 405]);
        expect(r.headers.get('allow')).toBe(allow);
        expect(r.body.error).toMatch(/not allowed/);
      }
    });

    it('a path under /v2 that is no OIP route is left to the server, which answers 404', async () => {
      for (const path of ['/v2/models/iris/explain', '/v2/models', '/v2/models/iris/versions', '/v2/']) {
        const r = await call(base + path);
        expect([path, r.status]).toEqual([path, 404]);
        expect(r.body.error).toMatch(/no route/);
      }
    });
  });

  describe('inference', () => {
    it('POST /v2/models/iris/infer answers the probabilities of one row, echoes the id, and says where it ran', async () => {
      const r = await inferIris(irisBody({ id: 'req-42' }));
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ model_name: 'iris', model_version: '1', id: 'req-42' });
      expect(r.body.outputs).toHaveLength(1);
      const out = r.body.outputs[0];
      expect(out).toMatchObject({ name: 'probabilities', shape: [1, 3], datatype: 'FP32' });
      expect(out.data).toHaveLength(3);
      expect(out.data.reduce((a: number, b: number) => a + b, 0)).toBeCloseTo(1, 5);
      expect(out.data.indexOf(Math.max(...out.data))).toBe(0); // setosa
      expect(r.body.parameters).toEqual({
        node: 'oip',
        worker: expect.any(String),
        batch_size: 1,
        queue_ms: expect.any(Number),
        infer_ms: expect.any(Number),
      });
    });

    it('a request without an id is answered with a generated one', async () => {
      const a = await inferIris(irisBody());
      const b = await inferIris(irisBody());
      expect(a.status).toBe(200);
      expect(a.body.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(b.body.id).not.toBe(a.body.id);
    });

    it('nested data is read row-major and gives the same numbers as flat data', async () => {
      const rows = [IRIS_ROW, [6.7, 3.0, 5.2, 2.3]];
      const flat = await inferIris(irisBody({}, { shape: [2, 4], data: rows.flat() }));
      const nested = await inferIris(irisBody({}, { shape: [2, 4], data: rows }));
      expect(flat.status).toBe(200);
      expect(nested.status).toBe(200);
      expect(nested.body.outputs[0].shape).toEqual([2, 3]);
      expect(nested.body.outputs[0].data).toEqual(flat.body.outputs[0].data);
    });

    it('gives exactly the numbers the WebSocket path gives for the same iris row and text-orientation image', async () => {
      const ws = await RawClient.connect(node.url);
      try {
        const irisWs = asResult(await ws.request({ id: 1, model: 'iris', inputs: irisInput(IRIS_ROW) }));
        const irisHttp = await inferIris(irisBody());
        expect(irisWs.batchSize).toBe(1);
        expect(irisHttp.body.parameters.batch_size).toBe(1);
        expect(irisHttp.body.outputs[0].data).toEqual(Array.from(readF32(irisWs.outputs['probabilities']!.data)));

        const img = image(7);
        const textWs = asResult(
          await ws.request({ id: 2, model: 'text-orientation', inputs: { x: { dtype: 'float32', shape: [1, 3, 48, 192], data: new Uint8Array(img.buffer) } } }),
        );
        const textHttp = await postJson(`${base}/v2/models/text-orientation/infer`, {
          inputs: [{ name: 'x', shape: [1, 3, 48, 192], datatype: 'FP32', data: nestedImage(img) }],
        });
        expect(textHttp.status).toBe(200);
        expect(textHttp.body.outputs[0]).toMatchObject({ name: 'softmax_0.tmp_0', shape: [1, 2], datatype: 'FP32' });
        expect(textHttp.body.outputs[0].data).toEqual(Array.from(readF32(textWs.outputs['softmax_0.tmp_0']!.data)));
      } finally {
        ws.close();
        await ws.closed;
      }
    });

    it('the versioned infer path serves the served version and is 404 for another', async () => {
      const ok = await inferIris(irisBody(), '/v2/models/iris/versions/1/infer');
      expect(ok.status).toBe(200);
      expect(ok.body.model_version).toBe('1');
      const other = await inferIris(irisBody(), '/v2/models/iris/versions/3/infer');
      expect(other.status).toBe(404);
      expect(other.body.error).toMatch(/no version "3"/);
    });

    it('outputs selects the named outputs, and an unknown output name is 400', async () => {
      const named = await inferIris(irisBody({ outputs: [{ name: 'probabilities' }] }));
      expect(named.status).toBe(200);
      expect(named.body.outputs.map((o: { name: string }) => o.name)).toEqual(['probabilities']);
      const unknown = await inferIris(irisBody({ outputs: [{ name: 'logits' }] }));
      expect(unknown.status).toBe(400);
      expect(unknown.body.error).toMatch(/no output "logits"/);
    });

    it('the priority, deadline_ms and key parameters are accepted, and invalid ones are 400', async () => {
      const ok = await inferIris(irisBody({ parameters: { priority: 'high', deadline_ms: 5000, key: 'user-7' } }));
      expect(ok.status).toBe(200);
      for (const [parameters, message] of [
        [{ priority: 'urgent' }, /priority/],
        [{ deadline_ms: 0 }, /deadline_ms/],
        [{ deadline_ms: '100' }, /deadline_ms/],
        [{ deadline_ms: 11 * 60_000 }, /deadline_ms/],
        [{ key: 42 }, /parameters\.key/],
        [{ key: 'k'.repeat(129) }, /parameters\.key/],
        ['fast', /parameters must be a JSON object/],
      ] as const) {
        const r = await inferIris(irisBody({ parameters }));
        expect([parameters, r.status]).toEqual([parameters, 400]);
        expect(r.body.error).toMatch(message);
      }
    });

    it('a tensor that does not fit the model is 400 naming the problem', async () => {
      const cases: [string, unknown, RegExp][] = [
        ['wrong shape', irisBody({}, { shape: [1, 5], data: [...IRIS_ROW, 1] }), /dim 1 is 5, model wants 4/],
        ['wrong rank', irisBody({}, { shape: [4] }), /rank 1/],
        ['too few elements', irisBody({}, { data: IRIS_ROW.slice(0, 3) }), /data has 3 elements, shape \[1,4\] needs 4/],
        ['too many elements', irisBody({}, { data: [...IRIS_ROW, 1] }), /data has 5 elements/],
        ['wrong datatype', irisBody({}, { datatype: 'INT32', data: [5, 3, 1, 0] }), /dtype int32, model wants float32/],
        ['unsupported datatype', irisBody({}, { datatype: 'BYTES' }), /datatype must be one of/],
        ['a string element', irisBody({}, { data: [5.1, '3.5', 1.4, 0.2] }), /element 1 is "3.5", not a FP32 value/],
        ['a null element', irisBody({}, { data: [5.1, 3.5, null, 0.2] }), /element 2 is null/],
        ['nested deeper than the shape', irisBody({}, { data: [[[5.1, 3.5, 1.4, 0.2]]] }), /nested deeper/],
        ['a negative dimension', irisBody({}, { shape: [-1, 4] }), /shape dimensions/],
        ['missing data', irisBody({}, { data: undefined }), /data must be an array/],
        ['wrong input name', irisBody({}, { name: 'features' }), /missing input "input"/],
        ['the same input twice', { inputs: [irisBody().inputs[0], irisBody().inputs[0]] }, /given twice/],
        ['no inputs', { inputs: [] }, /inputs must be an array/],
        ['a numeric id', irisBody({ id: 7 }), /id must be a string/],
      ];
      for (const [what, body, message] of cases) {
        const r = await inferIris(body);
        expect([what, r.status]).toEqual([what, 400]);
        expect(r.body.error).toMatch(message);
      }
    });

    it('a float that overflows FP32 or JSON is 400', async () => {
      const raw = JSON.stringify(irisBody()).replace('5.1', '1e39');
      const r = await postJson(`${base}/v2/models/iris/infer`, raw);
      expect(r.status).toBe(400);
      expect(r.body.error).toMatch(/element 0 is 1e\+39, not a FP32 value/);
      const inf = await postJson(`${base}/v2/models/iris/infer`, JSON.stringify(irisBody()).replace('5.1', '1e999'));
      expect(inf.status).toBe(400);
    });

    it('malformed JSON, and JSON that is not an object, are 400', async () => {
      for (const body of ['{"inputs": [', '', '[1,2,3]', 'null', '"inputs"']) {
        const r = await postJson(`${base}/v2/models/iris/infer`, body);
        expect([body, r.status]).toEqual([body, 400]);
        expect(typeof r.body.error).toBe('string');
      }
      const invalidUtf8 = await call(`${base}/v2/models/iris/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: new Uint8Array([0x7b, 0xff, 0x7d]),
      });
      expect(invalidUtf8.status).toBe(400);
    });

    it('a content type other than JSON is 415; JSON with a UTF-8 charset, or no content type, is accepted', async () => {
      const body = JSON.stringify(irisBody());
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1']) {
        const r = await postJson(`${base}/v2/models/iris/infer`, body, type);
        expect([type, r.status]).toEqual([type, 415]);
        expect(r.body.error).toMatch(/content-type|UTF-8/);
      }
      expect((await inferIris(body)).status).toBe(200);
      expect((await postJson(`${base}/v2/models/iris/infer`, body, 'Application/JSON; charset=UTF-8')).status).toBe(200);
      // fetch sends no content type for a byte body
      const none = await call(`${base}/v2/models/iris/infer`, { method: 'POST', body: new TextEncoder().encode(body) });
      expect(none.status).toBe(200);
    });

    it('a content-length over the body limit is 413 at once, before any of the body is sent, and the connection closes', async () => {
      const { req, response } = rawPost(node.port, '/v2/models/iris/infer', {
        'content-type': 'application/json',
        'content-length': String(1 << 30),
      });
      req.flushHeaders();
      const r = await response;
      req.destroy();
      expect(r.status).toBe(413);
      expect(r.headers['connection']).toBe('close');
      expect(JSON.parse(r.body).error).toMatch(/exceeds \d+ bytes/);
    });

    it('counts its HTTP requests in actorserve_requests_total with code "ok"', async () => {
      const before = await requestsTotal(base, { model: 'iris', code: 'ok' });
      for (let i = 0; i < 3; i++) expect((await inferIris(irisBody())).status).toBe(200);
      const after = await requestsTotal(base, { model: 'iris', code: 'ok' });
      expect(after - before).toBe(3);
      expect(after).toBeGreaterThanOrEqual(irisOk); // every HTTP result so far, plus the WebSocket ones
      expect(await requestsTotal(base, { model: 'iris', code: 'invalid_request' })).toBeGreaterThan(0);
    });
  });
});

describe('the OIP REST API over a stub node context', () => {
  let server: Server;
  let base: string;
  let port: number;
  let submitted: InferFrame[] = [];
  let answer: (f: InferFrame) => Promise<ResultFrame | ErrorFrame> = async (f) => result(f);
  let ready = false;

  const result = (f: InferFrame, outputs: ResultFrame['outputs'] = { probabilities: { dtype: 'float32', shape: [1, 3], data: f32([0.25, 0.5, 0.25]) } }): ResultFrame => ({
    t: 'result',
    id: f.id,
    model: f.model,
    version: '1',
    outputs,
    node: 'stub',
    worker: 'w0',
    batchSize: 1,
    timings: { queueMs: 1, inferMs: 2, totalMs: 3 },
  });

  const ctx: NodeContext = {
    nodeId: 'stub',
    models: resolveModels(['iris']),
    isReady: () => true,
    modelReady: () => ready,
    submit: (f) => {
      submitted.push(f);
      return answer(f);
    },
    clusterView: () => [],
    queueStats: () => ({}),
    metrics: undefined as unknown as Metrics, // the OIP routes never touch metrics; Node.submit counts
    maxBodyBytes: 4096,
  };

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (!handleOip(req, res, (req.url ?? '/').split('?')[0]!, ctx)) res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
    base = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const infer = (body: unknown = irisBody()) => {
    submitted = [];
    return postJson(`${base}/v2/models/iris/infer`, body);
  };

  it('maps every error code to its HTTP status with a JSON error body', async () => {
    const expected: Record<ErrorCode, number> = {
      invalid_request: 400,
      unauthorized: 401,
      model_not_found: 404,
      overloaded: 429,
      cancelled: 499,
      internal: 500,
      unavailable: 503,
      deadline_exceeded: 504,
    };
    for (const [code, status] of Object.entries(expected) as [ErrorCode, number][]) {
      answer = async (f) => ({ t: 'error', id: f.id, code, message: `it went ${code}` });
      const r = await infer();
      expect([code, r.status]).toEqual([code, status]);
      expect(r.body).toEqual({ error: `it went ${code}` });
    }
  });

  it('overloaded carries Retry-After in whole seconds, rounded up and at least 1', async () => {
    for (const [retryAfterMs, header] of [[1500, '2'], [1, '1'], [0, '1'], [undefined, '1'], [3000, '3']] as const) {
      answer = async (f) => ({ t: 'error', id: f.id, code: 'overloaded', message: 'busy', ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) });
      const r = await infer();
      expect(r.status).toBe(429);
      expect([retryAfterMs, r.headers.get('retry-after')]).toEqual([retryAfterMs, header]);
    }
  });

  it('a submit that rejects or throws is a 500 with a JSON error, and the next request is served', async () => {
    answer = () => Promise.reject(new Error('boom'));
    const rejected = await infer();
    expect(rejected.status).toBe(500);
    expect(rejected.body).toEqual({ error: 'internal error' });
    answer = () => {
      throw new Error('sync boom');
    };
    expect((await infer()).status).toBe(500);
    answer = async (f) => result(f);
    expect((await infer()).status).toBe(200);
  });

  it('hands submit one infer frame with little-endian bytes, the version and the extension parameters', async () => {
    answer = async (f) => result(f);
    submitted = [];
    const r = await postJson(`${base}/v2/models/iris/versions/1/infer`, irisBody({ id: 'abc', parameters: { priority: 'low', deadline_ms: 250, key: 'k1', other: 'ignored' } }));
    expect(r.status).toBe(200);
    expect(submitted).toHaveLength(1);
    const f = submitted[0]!;
    expect(f).toMatchObject({ t: 'infer', id: 'abc', model: 'iris', version: '1', priority: 'low', deadlineMs: 250, key: 'k1' });
    const t = f.inputs['input']!;
    expect(t.dtype).toBe('float32');
    expect(t.shape).toEqual([1, 4]);
    expect(Array.from(t.data)).toEqual(Array.from(f32(IRIS_ROW)));
    const view = new DataView(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    expect(view.getFloat32(0, true)).toBe(Math.fround(5.1));
  });

  it('maps each OIP datatype to its dtype and checks integer ranges', async () => {
    answer = async (f) => result(f);
    const cases: [string, unknown[], string, ArrayLike<number | bigint>][] = [
      ['FP64', [0.1, -2], 'float64', Float64Array.of(0.1, -2)],
      ['INT32', [-(2 ** 31), 2 ** 31 - 1], 'int32', Int32Array.of(-(2 ** 31), 2 ** 31 - 1)],
      ['INT64', [-(2 ** 53) + 1, 2 ** 53 - 1], 'int64', BigInt64Array.of(BigInt(-(2 ** 53) + 1), BigInt(2 ** 53 - 1))],
      ['UINT8', [0, 255], 'uint8', Uint8Array.of(0, 255)],
      ['INT8', [-128, 127], 'int8', Int8Array.of(-128, 127)],
    ];
    for (const [datatype, data, dtype, want] of cases) {
      const r = await infer({ inputs: [{ name: 'input', shape: [2], datatype, data }] });
      expect([datatype, r.status]).toEqual([datatype, 200]);
      const t = submitted[0]!.inputs['input']!;
      expect(t.dtype).toBe(dtype);
      const bytes = new Uint8Array((want as unknown as ArrayBufferView).buffer);
      expect([datatype, Array.from(t.data)]).toEqual([datatype, Array.from(bytes)]);
    }
    for (const [datatype, bad] of [['INT8', 128], ['UINT8', -1], ['INT32', 2 ** 31], ['INT32', 1.5], ['INT64', 2 ** 53], ['FP64', 'x']] as const) {
      const r = await infer({ inputs: [{ name: 'input', shape: [1], datatype, data: [bad] }] });
      expect([datatype, bad, r.status]).toEqual([datatype, bad, 400]);
      expect(r.body.error).toMatch(`not a ${datatype} value`);
    }
    expect(submitted).toHaveLength(0);
  });

  it('a shape with more elements than the body could hold is 400 without allocating it', async () => {
    const r = await infer({ inputs: [{ name: 'input', shape: [1 << 24, 1 << 24], datatype: 'FP32', data: [1, 2] }] });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatch(/data has 2 elements, shape \[16777216,16777216\] needs 281474976710656/);
  });

  it('reads outputs of every dtype, at any byte offset', async () => {
    const unaligned = new Uint8Array(13).subarray(1); // 12 bytes at offset 1
    new Uint8Array(unaligned.buffer, 1, 12).set(new Uint8Array(Float32Array.of(1.5, -2, 3).buffer));
    answer = async (f) =>
      result(f, {
        a: { dtype: 'float32', shape: [1, 3], data: unaligned },
        b: { dtype: 'int64', shape: [2], data: new Uint8Array(BigInt64Array.of(-5n, 9n).buffer) },
        c: { dtype: 'uint8', shape: [2], data: Uint8Array.of(7, 200) },
      });
    const r = await infer();
    expect(r.status).toBe(200);
    expect(r.body.outputs).toEqual([
      { name: 'a', shape: [1, 3], datatype: 'FP32', data: [1.5, -2, 3] },
      { name: 'b', shape: [2], datatype: 'INT64', data: [-5, 9] },
      { name: 'c', shape: [2], datatype: 'UINT8', data: [7, 200] },
    ]);
  });

  it('GET /v2/models/{m}/ready is 503 while the model has no loaded worker', async () => {
    ready = false;
    const r = await call(`${base}/v2/models/iris/ready`);
    expect(r.status).toBe(503);
    expect(r.body).toEqual({ name: 'iris', ready: false });
    ready = true;
    expect((await call(`${base}/v2/models/iris/ready`)).status).toBe(200);
  });

  it('a chunked body that grows past the limit is 413 and is not read to its end', async () => {
    answer = async (f) => result(f);
    submitted = [];
    const { req, response } = rawPost(port, '/v2/models/iris/infer', { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    let answered = false;
    void response.then(() => (answered = true));
    const chunk = Buffer.alloc(1024, 0x20); // JSON whitespace
    let sent = 0;
    while (!answered && sent < 1024) {
      req.write(chunk);
      sent++;
      await sleep(2);
    }
    const r = await response;
    req.destroy();
    expect(r.status).toBe(413);
    expect(r.headers['connection']).toBe('close');
    expect(JSON.parse(r.body)).toEqual({ error: 'request body exceeds 4096 bytes' });
    expect(sent).toBeLessThan(64); // answered soon after the limit, not at the end of the upload
    expect(submitted).toHaveLength(0);
  });

  it('a body within the limit whose content-length is exact is served', async () => {
    const r = await infer(JSON.stringify(irisBody()).padEnd(4096, ' '));
    expect(r.status).toBe(200);
    const over = await infer(JSON.stringify(irisBody()).padEnd(4097, ' '));
    expect(over.status).toBe(413);
  });

  it('a client that hangs up mid-body is not answered, submits nothing, and the server keeps serving', async () => {
    submitted = [];
    const { req } = rawPost(port, '/v2/models/iris/infer', { 'content-type': 'application/json', 'content-length': '100' });
    req.write('{"inputs": [');
    await sleep(20);
    req.destroy();
    await sleep(20);
    expect(submitted).toHaveLength(0);
    expect((await infer()).status).toBe(200);
  });
});
