import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * JSON lines on stdout; one child per actor path, made once at spawn.
 * `pretty` (for people at a terminal, never the default) formats lines with
 * pino-pretty in a worker thread.
 */
export function createLogger(opts: { level?: LevelWithSilent; node?: string; pretty?: boolean } = {}): Logger {
  return pino({
    level: opts.level ?? 'info',
    base: opts.node ? { node: opts.node, pid: process.pid } : { pid: process.pid },
    redact: { paths: ['token', 'secret', '*.token', '*.secret', 'authorization', '*.authorization', 'headers.authorization'], censor: '[redacted]' },
    ...(opts.pretty ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l' } } } : {}),
  });
}
