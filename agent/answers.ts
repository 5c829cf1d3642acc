/** Signed answers (protocol/agent.ts, "security model"): which responses are signed, and the header. */
import type { ServerResponse } from 'node:http';
import { ANSWER_SIG_HEADER, answerSignature } from '../protocol/agent.ts';

const ANSWER_KEY = Symbol('hostkeeper.answerKey');

type KeyedResponse = ServerResponse & { [ANSWER_KEY]?: { secret: string; nonce: string } };

/**
 * Marks a response as answering an authenticated request: every answer written for it
 * (success, error, 404, the channel's 200) carries x-hk-answer-sig over its status, the
 * request's nonce and its body (protocol/agent.ts). Responses never marked (refusals, and
 * vmReceive, which comes from another agent that does not hold our secret) are unsigned.
 */
export function signAnswers(res: ServerResponse, secret: string, nonce: string): void {
  (res as KeyedResponse)[ANSWER_KEY] = { secret, nonce };
}

/** The answer signature header for `status` + `body`, if this response is to be signed. */
export function answerHeaders(res: ServerResponse, status: number, body: string): Record<string, string> {
  const key = (res as KeyedResponse)[ANSWER_KEY];
  return key ? { [ANSWER_SIG_HEADER]: answerSignature(key.secret, status, key.nonce, body) } : {};
}

