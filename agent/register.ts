/**
 * Bootstrap-token registration: an agent started with `--controller URL --bootstrap-token
 * TOKEN` and no secret POSTs RegisterCmd (unsigned: the token is the credential) to
 * URL + CONTROLLER_AGENT_PATHS.register and gets its host uuid and secret back.
 * An unreachable controller or a 5xx is retried with capped exponential backoff (with
 * jitter, so a fleet does not come back in lockstep); a 4xx is final: the token is wrong,
 * used up or expired, and retrying would not change that.
 */
import { CONTROLLER_AGENT_PATHS, type RegisterCmd, type RegisterRsp } from '../protocol/agent.ts';
import { type Clock, sleep } from './clock.ts';
import { answerError, joinUrl, postJson } from './http-client.ts';
import { type Limiter, unlimited } from './limiter.ts';
import type { Logger } from './log.ts';
import { MIN_SECRET_LENGTH } from './state.ts';
import { isUuid } from '../protocol/values.ts';

export class RegistrationRefused extends Error {}

export interface Backoff {
  initialMs: number;
  maxMs: number;
}
export const DEFAULT_BACKOFF: Backoff = { initialMs: 500, maxMs: 30_000 };
const REGISTER_TIMEOUT_MS = 30_000;

export async function register(o: {
  controllerUrl: string;
  cmd: RegisterCmd;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
  backoff?: Backoff;
  limiter?: Limiter;
}): Promise<RegisterRsp> {
  const url = joinUrl(o.controllerUrl, CONTROLLER_AGENT_PATHS.register);
  const backoff = o.backoff ?? DEFAULT_BACKOFF;
  const body = JSON.stringify(o.cmd);
  let wait = backoff.initialMs;
  for (let attempt = 1; ; attempt++) {
    o.signal.throwIfAborted();
    let why: string;
    try {
      const a = await (o.limiter ?? unlimited).run(() => postJson(url, body, {}, REGISTER_TIMEOUT_MS));
      if (a.status >= 200 && a.status < 300) {
        const r = a.body as Partial<RegisterRsp> | undefined;
        if (r?.success === false) throw new RegistrationRefused(`controller ${o.controllerUrl} refused the registration: ${answerError(a)}`);
        if (!r || !isUuid(r.hostUuid) || typeof r.secret !== 'string' || r.secret.length < MIN_SECRET_LENGTH) {
          throw new RegistrationRefused(`controller ${o.controllerUrl} answered the registration without a valid hostUuid and secret`);
        }
        return { success: true, hostUuid: r.hostUuid, secret: r.secret };
      }
      if (a.status >= 400 && a.status < 500) {
        throw new RegistrationRefused(`controller ${o.controllerUrl} refused the registration (HTTP ${a.status}): ${answerError(a)}`);
      }
      why = `HTTP ${a.status}: ${answerError(a)}`;
    } catch (err) {
      if (err instanceof RegistrationRefused) throw err;
      why = (err as Error).message;
    }
    o.log.warn({ attempt, why, retryInMs: wait }, `registration with ${o.controllerUrl} failed; retrying`);
    await sleep(o.clock, wait * (0.75 + Math.random() * 0.5), o.signal);
    wait = Math.min(backoff.maxMs, wait * 2);
  }
}
