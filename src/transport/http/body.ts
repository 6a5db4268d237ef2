/**
 * Reading an HTTP request body under a hard cap: the one place the HTTP API
 * buffers client bytes. A stalled body is not handled here; the server's
 * `requestTimeout` closes it.
 */
import type { IncomingMessage } from 'node:http';

/** The body is larger than the cap; the caller answers 413 and closes the connection. */
export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
    this.name = 'BodyTooLarge';
  }
}

/** The `content-length` the client declared, or undefined for a chunked body (Node has already refused a malformed one). */
export function declaredLength(req: IncomingMessage): number | undefined {
  const header = req.headers['content-length'];
  return header === undefined ? undefined : Number(header);
}

/**
 * Buffers a request body of at most `limit` bytes. The moment more arrive it
 * stops reading (the request is paused, so the socket applies TCP
 * backpressure) and rejects; nothing past `limit` is kept. While it reads,
 * `reading` (when given) maps the request to the bytes held so far.
 * @throws BodyTooLarge past `limit`; Error when the client goes away before the end.
 */
export function readBody(req: IncomingMessage, limit: number, reading?: Map<IncomingMessage, number>): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    if (req.destroyed) return reject(new Error('request closed before its body was read'));
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      reading?.delete(req);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onGone);
      req.off('close', onGone);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.byteLength;
      if (size > limit) {
        done();
        req.pause();
        chunks.length = 0;
        return reject(new BodyTooLarge(limit));
      }
      chunks.push(chunk);
      reading?.set(req, size);
    };
    const onEnd = () => {
      done();
      // One chunk is the common case for small bodies: no copy then.
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onGone = () => {
      done();
      reject(new Error('request closed before its body was complete'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onGone);
    req.on('close', onGone);
  });
}
