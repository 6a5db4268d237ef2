import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/** JSON lines on stdout; one child per actor path, made once at spawn. */
export function createLogger(opts: { level?: LevelWithSilent; node?: string } = {}): Logger {
  return pino({
    level: opts.level ?? 'info',
    base: opts.node ? { node: opts.node, pid: process.pid } : { pid: process.pid },
    redact: { paths: ['token', 'secret', '*.token', '*.secret', 'authorization', '*.authorization'], censor: '[redacted]' },
  });
}
