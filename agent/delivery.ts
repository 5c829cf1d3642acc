/**
 * The source side of a migration's hand-over: POST vmReceive to the destination agent with
 * the one-time token, resent when the connection breaks. What matters is telling apart
 * "the destination did not take the VM" (the source may put it back) from "it may have"
 * (the source must not resume it):
 *
 * - no connection was ever made (refused, unknown host, bad URL): not taken, and not
 *   retried (the controller retries the migration if it wants);
 * - the destination answered a refusal to the FIRST attempt: not taken (it adds the VM only
 *   when it answers success);
 * - the connection broke or timed out after the request may have been sent: maybe taken.
 *   The same token is resent (the destination answers a resend of a token it used for this
 *   VM with success), so a lost answer usually resolves itself;
 * - a refusal after such an attempt: maybe taken (the destination may have restarted and
 *   forgotten the token, or the first receive is what failed);
 * - every attempt broke: maybe taken.
 *
 * It goes through the agent's one HTTP client (http-client.ts, axios) like the calls to the
 * controller: it is not a hot path (one request per migration, whose time is the transfer,
 * not this call; the measured hot path is the controller's pings, which the agent serves),
 * so it gains nothing from a hand-written node:http client. What the classification above
 * needs from the client is the system error's code (ECONNREFUSED, ENOTFOUND, EAI_AGAIN) and
 * `TLS:` for a refused handshake, which http-client.ts keeps and test/agent/http-client.test.ts
 * checks; the client never retries or follows redirects on its own, so each attempt here is
 * exactly one request.
 */
import { AGENT_PATHS, type AgentVm, MIGRATION_TOKEN_HEADER, type VmReceiveCmd } from '../protocol/agent.ts';
import { type Clock, sleep } from './clock.ts';
import { DeliveryError, vmName } from './drivers/driver.ts';
import { answerError, type ClientTls, joinUrl, NetworkError, postJson } from './http-client.ts';

/** Pauses before each resend (so 1 + length attempts in all). */
export const DELIVERY_RETRY_MS = [250, 1_000];
export const DELIVERY_TIMEOUT_MS = 120_000;

/** Errors raised before any byte of the request can have reached the destination. */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);

export interface Delivery {
  destinationUrl: string;
  token: string;
  clock: Clock;
  retryMs?: number[];
  timeoutMs?: number;
  signal?: AbortSignal;
  /**
   * TLS towards the destination agent (our certificate as client certificate, the pinned
   * CA). Given: agent ports speak only TLS, so an `http://` destination URL (a controller
   * that predates TLS) is reached as `https://`.
   */
  tls?: ClientTls;
}

export async function deliverVm(vm: AgentVm, d: Delivery): Promise<void> {
  const base = d.tls ? d.destinationUrl.replace(/^http:/, 'https:') : d.destinationUrl;
  const target = joinUrl(base, AGENT_PATHS.vmReceive);
  const body = JSON.stringify({ vm } satisfies VmReceiveCmd);
  const pauses = d.retryMs ?? DELIVERY_RETRY_MS;
  let maybe = false;
  for (let attempt = 0; ; attempt++) {
    let a;
    try {
      a = await postJson(target, body, { [MIGRATION_TOKEN_HEADER]: d.token }, d.timeoutMs ?? DELIVERY_TIMEOUT_MS, d.tls);
    } catch (err) {
      const why = err instanceof NetworkError ? err.message : String(err);
      // A refused TLS handshake sends nothing either: the request is written only after it.
      if (!(err instanceof NetworkError && (NEVER_CONNECTED.has(why) || why.startsWith('bad URL') || why.startsWith('TLS:')))) maybe = true;
      const pause = pauses[attempt];
      // Nothing can have arrived yet: a resend would not make the answer any less certain.
      if (!maybe || pause === undefined || d.signal?.aborted) {
        throw new DeliveryError(`cannot reach destination agent ${d.destinationUrl} for ${vmName(vm.uuid)}: ${why}`, maybe);
      }
      if (pause > 0) await sleep(d.clock, pause, d.signal).catch(() => {});
      continue;
    }
    if (a.status === 200 && (a.body as { success?: unknown } | undefined)?.success === true) return;
    throw new DeliveryError(`destination agent ${d.destinationUrl} refused ${vmName(vm.uuid)}: ${answerError(a)} (HTTP ${a.status})`, maybe);
  }
}
