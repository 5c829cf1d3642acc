/**
 * Structured logs (pino): one line per API call and per state or status change. Nothing
 * secret is ever passed to a logger; `redact` is a second fence for fields named like one.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.HOSTKEEPER_LOG_LEVEL ?? 'info',
      base: { svc: 'controller' },
      redact: { paths: ['password', '*.password', '*.*.password', 'token', '*.token'], censor: '***' },
    },
    opts.destination ?? pino.destination({ sync: false }),
  );
}
