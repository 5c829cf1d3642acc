/**
 * The controllers' internal API (several controllers on one database, controller/cluster/),
 * outside the admin session check:
 *
 * - POST /zstack/internal/agent-call: another controller asks us, the holder of a host, to
 *   make an agent call for it (cluster/peer-calls.ts). Signed with our secret by a live member;
 *   the answer is signed back. Only the agent paths of protocol/agent.ts are relayed.
 * - GET /zstack/internal/pings (admin session): how often and when this controller pinged
 *   each host, and which hosts it holds: the multi-controller tests count double pinging
 *   from these.
 */
import express, { type Request, type Response } from 'express';
import { AGENT_PATHS, ANSWER_SIG_HEADER, AUTH, ReplayGuard, verifySigned } from '../../protocol/agent.ts';
import { AgentError } from '../agents/client.ts';
import { type PeerAnswer, type PeerCallCmd, signPeerAnswer } from '../cluster/peer-calls.ts';
import type { Core } from '../core.ts';

const RELAYED = new Set<string>(Object.values(AGENT_PATHS).filter((p) => p !== AGENT_PATHS.channel));
const MAX_TIMEOUT_MS = 10 * 60_000;

export function internalRouter(core: Core): express.Router {
  const r = express.Router();
  const guard = new ReplayGuard();
  const { cluster, agents, clock, log } = core;

  r.post('/agent-call', express.raw({ type: () => true, limit: '1mb' }), (req: Request, res: Response) => {
    void (async () => {
      const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const v = verifySigned(req.headers, 'POST', req.originalUrl, raw, clock.now(), (caller) => (cluster.isLive(caller) ? cluster.callSecret : undefined), guard);
      if (!v.ok) {
        log.warn({ from: req.socket.remoteAddress, why: v.why }, 'internal call refused');
        return res.status(401).json({ success: false, error: 'unauthorized' });
      }
      let answer: PeerAnswer<unknown>;
      try {
        const cmd = JSON.parse(raw.toString('utf8')) as PeerCallCmd;
        if (typeof cmd?.hostUuid !== 'string' || !RELAYED.has(cmd.path) || typeof cmd.timeoutMs !== 'number' || !(cmd.timeoutMs > 0 && cmd.timeoutMs <= MAX_TIMEOUT_MS)) {
          throw new AgentError('bad-answer', 'malformed internal agent call');
        }
        answer = { success: true, body: await agents.callForPeer(cmd.hostUuid, cmd.path, cmd.body, cmd.timeoutMs) };
      } catch (err) {
        const e = err instanceof AgentError ? err : new AgentError('unreachable', (err as Error).message);
        answer = { success: false, failure: { kind: e.kind, message: e.message, ...(e.status ? { status: e.status } : {}), ...(e.code ? { code: e.code } : {}) } };
      }
      const signed = signPeerAnswer(cluster.callSecret, req.get(AUTH.nonce)!, answer);
      res.status(200).set(ANSWER_SIG_HEADER, signed.sig).type('application/json').send(signed.text);
    })().catch((err) => {
      log.error({ err: (err as Error).message }, 'internal call failed');
      if (!res.headersSent) res.status(500).json({ success: false, error: 'internal call failed' });
    });
  });

  r.get('/pings', (req: Request, res: Response) => {
    const m = /^OAuth\s+(\S+)$/i.exec(req.get('authorization')?.trim() ?? '');
    core.auth.check(m?.[1]).then(() => {
      res.status(200).json({ controller: cluster.uuid, members: cluster.members, holds: cluster.heldHosts, pings: Object.fromEntries(agents.pings) });
    }, (err: { status?: number; toBody?: () => unknown }) => {
      res.status(err.status ?? 401).json({ error: err.toBody?.() ?? 'unauthorized' });
    });
  });
  return r;
}
