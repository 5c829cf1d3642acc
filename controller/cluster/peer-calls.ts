/**
 * Calls to another controller's internal API (api/internal.ts): an agent call for a host that
 * controller holds. Signed like agent requests (protocol/agent.ts), with the *callee's* secret
 * from its `controller` row (whoever can read the database is trusted, as for the CA), and the
 * answer signed back over our nonce: a party between two controllers can neither forge a call
 * nor an answer. axios with no proxy: a proxy from the environment must never see these.
 */
import axios from 'axios';
import { ANSWER_SIG_HEADER, answerSignature, AUTH, signedHeaders, verifyAnswer } from '../../protocol/agent.ts';
import type { ControllerRow } from './cluster.ts';

export const PEER_AGENT_CALL_PATH = '/zstack/internal/agent-call';

/** What a peer sends for an agent call it could not make (mirrors AgentError's fields). */
export interface PeerFailure {
  kind: 'unreachable' | 'timeout' | 'unauthorized' | 'refused' | 'bad-answer';
  message: string;
  status?: number;
  code?: string;
}

export type PeerAnswer<T> = { success: true; body: T } | { success: false; failure: PeerFailure };

export interface PeerCallCmd {
  hostUuid: string;
  path: string;
  body: unknown;
  timeoutMs: number;
}

/** The signed answer a peer sends (api/internal.ts). */
export function signPeerAnswer(secret: string, nonce: string, answer: PeerAnswer<unknown>): { text: string; sig: string } {
  const text = JSON.stringify(answer);
  return { text, sig: answerSignature(secret, 200, nonce, text) };
}

export class PeerCalls {
  constructor(private readonly self: { uuid: string }, private readonly now: () => number) {}

  /** The agent's answer through `peer`; throws nothing for the agent's own refusals (see PeerAnswer). */
  async call<T>(peer: ControllerRow, hostUuid: string, path: string, body: unknown, timeoutMs: number): Promise<PeerAnswer<T>> {
    const cmd: PeerCallCmd = { hostUuid, path, body, timeoutMs };
    const payload = JSON.stringify(cmd);
    const headers = signedHeaders(peer.secret, this.self.uuid, 'POST', PEER_AGENT_CALL_PATH, payload, this.now());
    const where = `controller[uuid:${peer.uuid}] (holding host[uuid:${hostUuid}])`;
    let res;
    try {
      res = await axios.post<ArrayBuffer>(peer.apiUrl + PEER_AGENT_CALL_PATH, payload, {
        headers: { ...headers, 'content-type': 'application/json' },
        timeout: timeoutMs + 5_000, proxy: false, responseType: 'arraybuffer', validateStatus: () => true,
        maxContentLength: 16 * 1024 * 1024, transitional: { clarifyTimeoutError: true },
      });
    } catch (err) {
      return { success: false, failure: { kind: 'unreachable', message: `${where} did not answer: ${(err as Error).message}` } };
    }
    const raw = Buffer.from(res.data);
    if (res.status !== 200 || !verifyAnswer(peer.secret, 200, headers[AUTH.nonce]!, raw, res.headers[ANSWER_SIG_HEADER] as string | undefined)) {
      return { success: false, failure: { kind: 'unauthorized', message: `${where} answered ${res.status} without a valid signature` } };
    }
    try {
      return JSON.parse(raw.toString('utf8')) as PeerAnswer<T>;
    } catch {
      return { success: false, failure: { kind: 'bad-answer', message: `${where} answered with a body that is not JSON` } };
    }
  }
}
