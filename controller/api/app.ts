/**
 * The admin REST API in ZStack's v1 shape (base /zstack). A request flows:
 *   json body parser -> access log -> session check -> route: parse and validate (protocol/)
 *   -> one call into services/ or flows/ inside a job -> store -> 202 + job location,
 * or, for queries, protocol/query.ts -> repository.query -> 200 with inventories.
 * Every error becomes `{"error":{code, description, details}}` with the catalogue's status.
 * The routes live one file per resource (zones.ts, hosts.ts, vms.ts, configs.ts, tags.ts,
 * jobs.ts, queries.ts); this file is the middleware around them.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import { LoginBody, parseBody } from '../../protocol/api.ts';
import { type HkError, invalidArgument, notFound, tooLarge } from '../../protocol/errors.ts';
import { SESSION_SCHEMA_CLASS } from '../../protocol/resources.ts';
import { formatZStackDate } from '../../protocol/values.ts';
import type { Core } from '../core.ts';
import { agentRouter } from './agent-api.ts';
import { internalRouter } from './internal.ts';
import { errorOf, makeApi, h, storeDown } from './common.ts';
import { StoreUnavailableError } from '../store/repository.ts';
import { bootstrapRoutes } from './bootstrap.ts';
import { configRoutes } from './configs.ts';
import { hostRoutes } from './hosts.ts';
import { jobRoutes } from './jobs.ts';
import { queryRoutes } from './queries.ts';
import { tagRoutes } from './tags.ts';
import { vmRoutes } from './vms.ts';
import { maintenanceWindowRoutes } from './maintenance-windows.ts';
import { zoneRoutes } from './zones.ts';
import { consoleApiRoutes, consoleRouter, consoleSessionOf } from './console.ts';
import { eventRoutes } from './events.ts';
import { metricsRouter } from './metrics.ts';
import { openApiRoutes } from './openapi.ts';

export { toInventory } from '../../protocol/inventory.ts';

export const BODY_LIMIT = '256kb';

function sendError(res: Response, err: HkError): void {
  // A throttled login says when to come back.
  const retry = (err as { retryAfterSeconds?: number }).retryAfterSeconds;
  if (retry !== undefined) res.set('Retry-After', String(retry));
  res.status(err.status).json({ error: err.toBody() });
}

function sessionOf(req: Request): string | undefined {
  const h = req.get('authorization');
  const m = h ? /^OAuth\s+(\S+)$/i.exec(h.trim()) : null;
  // The web console's cookie, only for reads and requests carrying its header (api/console.ts).
  return m?.[1] ?? consoleSessionOf(req);
}

export interface AppOptions {
  /** Where clients reach this API (job locations); default: the address each client connected to. */
  apiUrl?: string;
}

export function createApp(core: Core, opts: AppOptions = {}): express.Express {
  const { log, auth } = core;
  const app = express();
  app.disable('x-powered-by');
  app.set('query parser', 'simple');

  // One access-log line per API call; never the body (it may hold a password).
  app.use((req, res, next) => {
    const t0 = process.hrtime.bigint();
    res.on('finish', () => {
      log.info(
        { method: req.method, path: req.originalUrl.split('?')[0], status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 },
        'api',
      );
    });
    next();
  });
  const json = express.json({ limit: BODY_LIMIT, type: () => true, strict: false });
  // What agents call: authenticated by bootstrap token or host signature, not by session.
  app.use('/zstack/agent', agentRouter(core));
  // What other controllers call (controller/cluster/): signed by a live member, or an admin session.
  app.use('/zstack/internal', internalRouter(core));
  // The console's pages and cookie session, /metrics and the API document: outside the session check.
  app.use(consoleRouter(core));
  app.use(metricsRouter(core, sessionOf));
  openApiRoutes(app);
  // While the store reports the database down, every admin API call is answered 503 at once
  // (ZStack's error body, naming since when and why) instead of each one failing on its own
  // connection attempt; the console's pages, /metrics and the API document above still answer.
  app.use('/zstack', (_req, res, next) => {
    const health = core.repo.health?.();
    if (!health || health.ok) return next();
    sendError(res, storeDown(health));
  });
  const router = express.Router();
  app.use('/zstack', router);

  router.put('/v1/accounts/login', json, h(async (req, res) => {
    const body = parseBody(LoginBody, req.body);
    const s = await auth.login(body.logInByAccount.accountName, body.logInByAccount.password, req.socket.remoteAddress);
    res.status(200).json({
      inventory: { uuid: s.uuid, accountUuid: s.accountUuid, userUuid: s.accountUuid, expiredDate: formatZStackDate(s.expiredDate), createDate: formatZStackDate(s.createDate) },
      schema: { inventory: SESSION_SCHEMA_CLASS },
    });
  }));

  // LogOut: ZStack's SDK sends no Authorization header; the session in the path is the credential.
  router.delete('/v1/accounts/sessions/:uuid', h(async (req, res) => {
    await auth.logout(req.params.uuid as string);
    res.status(200).json({});
  }));

  // Everything below needs a session.
  router.use('/v1', (req, _res, next) => {
    auth.check(sessionOf(req)).then(() => next(), next);
  });
  // Bodies are read only once the caller is known.
  router.use(json);

  const api = makeApi(core, router, opts.apiUrl);
  jobRoutes(api);
  eventRoutes(api, sessionOf);
  consoleApiRoutes(api);
  // Before the queries: /v1/hosts/bootstrap-tokens is not a host uuid.
  bootstrapRoutes(api);
  queryRoutes(api);
  zoneRoutes(api);
  hostRoutes(api);
  vmRoutes(api);
  maintenanceWindowRoutes(api);
  configRoutes(api);
  tagRoutes(api);

  app.use((req, res) => {
    sendError(res, notFound(`no API at ${req.method} ${req.path}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number; message?: string };
    let hk: HkError;
    if (e?.type === 'entity.parse.failed') hk = invalidArgument(`request body is not valid JSON: ${e.message}`);
    else if (e?.type === 'entity.too.large') hk = tooLarge(`request body is larger than ${BODY_LIMIT}`);
    else if (e?.type && typeof e.status === 'number' && e.status < 500) hk = invalidArgument(`unreadable request body: ${e.message}`);
    else hk = errorOf(err);
    if (hk instanceof StoreUnavailableError) log.warn({ method: req.method, path: req.path, err: hk.details }, 'store unavailable');
    else if (hk.code === 'SYS.1000') log.error({ method: req.method, path: req.path, err: (err as Error)?.stack }, 'internal error');
    if (!res.headersSent) sendError(res, hk);
  });

  return app;
}
