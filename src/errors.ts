/**
 * Errors are values with a stable code. Each code is part of the client
 * protocol (docs/protocol.md) and maps to one wire `error` frame; codes are a
 * contract: extend, never rename.
 */
export const ERROR_CODES = [
  'invalid_request',
  'model_not_found',
  'deadline_exceeded',
  'overloaded',
  'unavailable',
  'unauthorized',
  'cancelled',
  'internal',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/**
 * An answer with a code, not a bug: no stack trace is captured (a node
 * refusing thousands of requests a second under overload spent more time
 * building their stacks than deciding to refuse them).
 */
export class ActorserveError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterMs: number | undefined;

  constructor(code: ErrorCode, message: string, retryAfterMs?: number) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message);
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'ActorserveError';
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }

  static is(e: unknown, code?: ErrorCode): e is ActorserveError {
    return e instanceof ActorserveError && (code === undefined || e.code === code);
  }
}

export const invalidRequest = (message: string) => new ActorserveError('invalid_request', message);
export const modelNotFound = (message: string) => new ActorserveError('model_not_found', message);
export const deadlineExceeded = (message = 'deadline passed before the request ran') =>
  new ActorserveError('deadline_exceeded', message);
export const overloaded = (message: string, retryAfterMs: number) =>
  new ActorserveError('overloaded', message, retryAfterMs);
export const unavailable = (message: string) => new ActorserveError('unavailable', message);
export const internal = (message: string) => new ActorserveError('internal', message);

/** WebSocket close codes the server uses (RFC 6455 §7.4.1). */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  unsupportedData: 1003,
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
} as const;
