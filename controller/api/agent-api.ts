/**
 * What agents call on the controller (protocol/agent.ts CONTROLLER_AGENT_PATHS, protocol/pki.ts
 * PKI_PATHS), apart from the admin API: the CA (public), registration with a bootstrap token
 * (TLS only), certificate requests and facts pushes (signed with the host secret).
 *
 * One router serves both listeners (the admin port and the TLS agent port, server.ts), so
 * one nonce guard sees every push whichever port it came in on. Requests that came in on the
 * agent port are marked (`onAgentPort`): registration is served only there, so its answer
 * (the host's secret) never travels in clear. Certificate requests and pushes are accepted on
 * both: their signatures (both ways) are the authentication, and a deployed agent that knows
 * only the admin URL gets its first certificate and the CA that way.
 *
 * Signed requests also pass the ReplayFence (protocol/replay-fence.ts), so a push captured
 * before a controller restart cannot be replayed after it.
 */
import { networkInterfaces } from 'node:os';
import type { TLSSocket } from 'node:tls';
import express, { type NextFunction, type Request, type Response } from 'express';
import { ANSWER_SIG_HEADER, answerSignature, AUTH, ReplayGuard, type RegisterRsp, verifySigned } from '../../protocol/agent.ts';
import { CertificateSchema, FactsPushSchema, RegisterSchema } from '../../protocol/agent-schemas.ts';
import { describeIssue } from '../../protocol/api.ts';
import { toHkError } from '../../protocol/errors.ts';
import { type CaInfo, type CertificateRsp, PKI_PATHS } from '../../protocol/pki.ts';
import type { HostRow } from '../../protocol/resources.ts';
import { type ControllerEndpoint, isUuid } from '../../protocol/values.ts';
import { applyHostFacts } from '../services/facts.ts';
import type { Core } from '../core.ts';
import { BadPublicKey } from '../pki/ca.ts';
import type { Registered } from '../flows/host-ops.ts';
import { TokenUnusable } from '../services/bootstrap.ts';

/**
 * The controller's own endpoint as seen from a request it serves: the port the request came
 * in on and every address of this machine (the listener may be on 0.0.0.0). A host address
 * equal to it would have the controller call itself as if it were an agent.
 */
export function controllerEndpoint(req: Request, otherPorts: number[] = []): ControllerEndpoint {
  const addresses = Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address));
  if (req.socket.localAddress) addresses.push(req.socket.localAddress);
  const ports = [...new Set([...(req.socket.localPort ? [req.socket.localPort] : []), ...otherPorts])];
  return { ports, addresses };
}

const fail = (res: Response, status: number, error: string) => res.status(status).json({ success: false, error });

const ON_AGENT_PORT = Symbol('hostkeeper.onAgentPort');

/** Middleware of the TLS agent listener: marks its requests (registration is served only there). */
export function onAgentPort(req: Request, _res: Response, next: NextFunction): void {
  (req as Request & { [ON_AGENT_PORT]?: boolean })[ON_AGENT_PORT] = true;
  next();
}
const cameOnAgentPort = (req: Request) => (req as Request & { [ON_AGENT_PORT]?: boolean })[ON_AGENT_PORT] === true;

export interface AgentApiOptions {
  /** The TLS port agents are told to use (HOSTKEEPER_AGENT_PORT; the bound one when 0 was asked). */
  agentPort: () => number;
}

const routers = new WeakMap<Core, express.Router>();

/** The router (one per core, whichever listener mounts it: see above). */
export function agentRouter(core: Core, opts?: AgentApiOptions): express.Router {
  let r = routers.get(core);
  if (!r) routers.set(core, (r = makeRouter(core, opts ?? { agentPort: () => core.agentPort })));
  return r;
}

function makeRouter(core: Core, opts: AgentApiOptions): express.Router {
  const { repo, clock, log, agents, pki, agentFence: fence } = core;
  const r = express.Router();
  const guard = new ReplayGuard();

  /**
   * A signed request from a host's agent: signature, freshness, nonce, replay fence, and,
   * when the agent presented a certificate from our CA, that it is this host's. Undefined
   * (after answering 401) when it does not pass.
   */
  async function signedHost(req: Request, res: Response, raw: Buffer): Promise<HostRow | undefined> {
    const claimed = req.get(AUTH.host) ?? '';
    const host = isUuid(claimed) ? await repo.get<HostRow>('host', claimed) : undefined;
    const v = verifySigned(req.headers, 'POST', req.originalUrl, raw, clock.now(), () => host?.agentSecret ?? undefined, guard);
    let why: string | undefined = v.ok ? undefined : v.why;
    const ts = Number(req.get(AUTH.ts));
    if (!why && !fence.admits(ts)) why = 'signed-before-start';
    const sock = req.socket as TLSSocket;
    if (!why && sock.encrypted && sock.authorized && sock.getPeerCertificate()?.subject?.CN !== claimed) why = 'certificate-of-another-host';
    if (why) {
      log.warn({ from: req.socket.remoteAddress, why, path: req.path }, 'agent request refused');
      fail(res, 401, 'unauthorized');
      return undefined;
    }
    await fence.cover(ts);
    return host;
  }

  r.get(PKI_PATHS.ca.replace('/zstack/agent', ''), (_req: Request, res: Response) => {
    const body: CaInfo = { success: true, caCertificates: pki.caBundle, caCertHash: pki.caCertHash, agentPort: opts.agentPort() };
    res.status(200).json(body);
  });

  r.post('/v1/register', express.json({ limit: '16kb', type: () => true }), (req: Request, res: Response) => {
    void (async () => {
      if (!cameOnAgentPort(req)) {
        // Its answer holds the host's secret: only over TLS to a CA the agent pinned.
        return fail(res, 403, `registration is served over TLS only, on the controller's agent port ${opts.agentPort()} (the agent finds it through ${PKI_PATHS.ca}); upgrade the agent`);
      }
      const parsed = RegisterSchema.safeParse(req.body);
      if (!parsed.success) return fail(res, 400, `bad registration: ${describeIssue(parsed.error.issues[0]!)}`);
      const b = parsed.data;
      let reg: Registered;
      try {
        reg = await core.hostOps.register(b, req.socket.remoteAddress, controllerEndpoint(req, agents.ownPorts));
      } catch (err) {
        if (err instanceof TokenUnusable) {
          log.warn({ from: req.socket.remoteAddress, hostname: b.hostname }, 'registration refused: unknown, expired, revoked or used-up bootstrap token');
          return fail(res, 401, 'unknown, expired, revoked or used-up bootstrap token');
        }
        if (err instanceof BadPublicKey) return fail(res, 400, `bad registration: ${err.message}`);
        const e = toHkError(err);
        return fail(res, e.status === 400 ? 409 : e.status, e.details);
      }
      const body: RegisterRsp = { success: true, hostUuid: reg.host.uuid, secret: reg.secret, certificate: reg.certificate, caCertificates: pki.caBundle };
      res.status(200).json(body);
      core.hostOps.connectRegistered(reg.host.uuid);
    })().catch((err) => fail(res, 500, toHkError(err).details));
  });

  r.post(PKI_PATHS.certificate.replace('/zstack/agent', ''), express.raw({ limit: '16kb', type: () => true }), (req: Request, res: Response) => {
    void (async () => {
      const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const host = await signedHost(req, res, raw);
      if (!host) return;
      // Answers from here on are signed: the agent trusts the CA in it on that signature.
      const answer = (status: number, body: object) => {
        const text = JSON.stringify(body);
        res.status(status).set('content-type', 'application/json')
          .set(ANSWER_SIG_HEADER, answerSignature(host.agentSecret!, status, req.get(AUTH.nonce)!, text)).send(text);
      };
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8'));
      } catch {
        return answer(400, { success: false, error: 'body must be {"publicKey":"<SPKI PEM>"}' });
      }
      const parsed = CertificateSchema.safeParse(body);
      if (!parsed.success) return answer(400, { success: false, error: describeIssue(parsed.error.issues[0]!) });
      let issued: { cert: string; notAfter: number };
      try {
        issued = await pki.issueAgent(host.uuid, host.managementIp, parsed.data.publicKey);
      } catch (err) {
        if (err instanceof BadPublicKey) return answer(400, { success: false, error: err.message });
        throw err;
      }
      await repo.transaction((tx) => tx.update<HostRow>('host', host.uuid, { agentCertNotAfter: issued.notAfter }));
      log.info({ host: host.uuid, notAfter: new Date(issued.notAfter).toISOString() }, 'issued an agent certificate');
      const out: CertificateRsp = { success: true, certificate: issued.cert, caCertificates: pki.caBundle, agentPort: opts.agentPort() };
      answer(200, out);
    })().catch((err) => {
      if (!res.headersSent) fail(res, 500, toHkError(err).details);
    });
  });

  r.post('/v1/facts', express.raw({ limit: '256kb', type: () => true }), (req: Request, res: Response) => {
    void (async () => {
      const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      const host = await signedHost(req, res, raw);
      if (!host) return;
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
        log.warn({ host: host.uuid, why }, 'agent push refused: bad facts');
        return fail(res, 400, why);
      }
      const push = parsed.data;
      await repo.transaction((tx) => applyHostFacts(tx, host.uuid, push.facts, clock.now()));
      log.info({ host: host.uuid }, 'host facts changed (agent push)');
      res.status(200).json({ success: true });
    })().catch((err) => {
      if (!res.headersSent) fail(res, 500, toHkError(err).details);
    });
  });

  return r;
}
