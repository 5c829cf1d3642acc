/**
 * What agents call on the controller (protocol/agent.ts CONTROLLER_AGENT_PATHS), apart from
 * the admin API: registration with a bootstrap token, and signed pushes.
 */
import { networkInterfaces } from 'node:os';
import express, { type Request, type Response } from 'express';
import { ReplayGuard, type RegisterRsp, verifySigned } from '../../protocol/agent.ts';
import { FactsPushSchema, RegisterSchema } from '../../protocol/agent-schemas.ts';
import { describeIssue } from '../../protocol/api.ts';
import { toHkError } from '../../protocol/errors.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { type ControllerEndpoint, isUuid, normalizeIp } from '../../protocol/values.ts';
import { HostAgents, metadataTags } from '../agents/host-agents.ts';
import type { Core } from '../core.ts';
import { checkBootstrapToken } from '../services/bootstrap.ts';
import { insertHost } from '../services/inventory.ts';
import { syncInherentTags } from '../services/tags.ts';

/**
 * The controller's own endpoint as seen from a request it serves: the port the request came
 * in on and every address of this machine (the listener may be on 0.0.0.0). A host address
 * equal to it would have the controller call itself as if it were an agent.
 */
export function controllerEndpoint(req: Request): ControllerEndpoint {
  const addresses = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address));
  if (req.socket.localAddress) addresses.push(req.socket.localAddress);
  return { ports: req.socket.localPort ? [req.socket.localPort] : [], addresses };
}

const fail = (res: Response, status: number, error: string) => res.status(status).json({ success: false, error });

export function agentRouter(core: Core): express.Router {
  const { repo, clock, log, agents } = core;
  const r = express.Router();
  const guard = new ReplayGuard();

  r.post('/v1/register', express.json({ limit: '16kb', type: () => true }), (req: Request, res: Response) => {
    void (async () => {
      const parsed = RegisterSchema.safeParse(req.body);
      if (!parsed.success) return fail(res, 400, `bad registration: ${describeIssue(parsed.error.issues[0]!)}`);
      const b = parsed.data;
      const token = await checkBootstrapToken(repo, b.token, clock.now());
      if (!token) {
        log.warn({ from: req.socket.remoteAddress, hostname: b.hostname }, 'registration refused: unknown or expired bootstrap token');
        return fail(res, 401, 'unknown or expired bootstrap token');
      }
      // 0.0.0.0 means "the address you see me from"; normalised so `::ffff:10.0.0.1` is 10.0.0.1.
      const ip = b.managementIp === '0.0.0.0' ? (normalizeIp(req.socket.remoteAddress ?? '') ?? '') : b.managementIp;
      const secret = HostAgents.newSecret();
      let host: HostRow;
      try {
        host = await repo.transaction(async (tx) => {
          const h = await insertHost(
            tx, clock.now(), { name: b.hostname, managementIp: ip, clusterUuid: token.clusterUuid, agentPort: b.port },
            'Connecting', 'registered with a bootstrap token', {}, controllerEndpoint(req),
          );
          return tx.update<HostRow>('host', h.uuid, { agentPort: b.port, agentSecret: secret });
        });
      } catch (err) {
        const e = toHkError(err);
        return fail(res, e.status === 400 ? 409 : e.status, e.details);
      }
      log.info({ host: host.uuid, managementIp: ip, cluster: token.clusterUuid }, 'host registered with a bootstrap token');
      const body: RegisterRsp = { success: true, hostUuid: host.uuid, secret };
      res.status(200).json(body);
      // The agent stores its secret once it reads this answer; should the first connect
      // beat it there, the capped-backoff retry takes over.
      void agents.connect(host.uuid).catch((err) => {
        log.info({ host: host.uuid, err: (err as Error).message }, 'first connect after registration failed; will retry');
        agents.retryLater(host.uuid, err);
      });
    })().catch((err) => fail(res, 500, toHkError(err).details));
  });

  r.post('/v1/facts', express.raw({ limit: '256kb', type: () => true }), (req: Request, res: Response) => {
    void (async () => {
      const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const claimed = req.get('x-hk-host') ?? '';
      const host = isUuid(claimed) ? await repo.get<HostRow>('host', claimed) : undefined;
      const v = verifySigned(req.headers, 'POST', req.originalUrl, raw, clock.now(), () => host?.agentSecret ?? undefined, guard);
      if (!v.ok) {
        log.warn({ from: req.socket.remoteAddress, why: v.why }, 'agent push refused');
        return fail(res, 401, 'unauthorized');
      }
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return fail(res, 400, 'body must be {"facts":{...}}');
      }
      // Signed by the host's own secret, which says who sent it, not that it is sane: every
      // field is checked before anything is stored (a bad one: 400 naming it, nothing written).
      const parsed = FactsPushSchema.safeParse(body);
      if (!parsed.success) {
        const why = describeIssue(parsed.error.issues[0]!);
        log.warn({ host: host!.uuid, why }, 'agent push refused: bad facts');
        return fail(res, 400, why);
      }
      const push = parsed.data;
      await repo.transaction((tx) => syncInherentTags(tx, host!.uuid, metadataTags(push.facts), clock.now()));
      log.info({ host: host!.uuid }, 'host facts changed (agent push)');
      res.status(200).json({ success: true });
    })().catch((err) => fail(res, 500, toHkError(err).details));
  });

  return r;
}
