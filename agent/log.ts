/**
 * Structured logs (pino, JSON lines on stdout). One logger per process: a fleet process
 * running thousands of agents shares it and gives each agent a child with its address.
 * Secrets never reach a logger; `redact` is a second fence for fields named like one.
 */
import pino, { type Logger } from 'pino';

export type { Logger };

export function createAgentLogger(opts: { level?: string; destination?: pino.DestinationStream; svc?: string } = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.HOSTKEEPER_LOG_LEVEL ?? 'info',
      base: { svc: opts.svc ?? 'agent' },
      redact: { paths: ['secret', '*.secret', 'token', '*.token', 'headers', '*.headers'], censor: '***' },
    },
    opts.destination ?? pino.destination({ sync: false }),
  );
}

export const silentLogger = (): Logger => pino({ level: 'silent' });
