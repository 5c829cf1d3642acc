/**
 * The admin REST API in ZStack's v1 shape (base /zstack). A request flows:
 *   json body parser -> access log -> session check -> route: parse and validate (protocol/)
 *   -> service call inside a job (services/) -> store (store/) -> 202 + job location,
 * or, for queries, protocol/query.ts -> repository.query -> 200 with inventories.
 * Every error becomes `{"error":{code, description, details}}` with the catalogue's status.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  ActionTags, AddKvmHostBody, BootstrapTokenBody, CreateClusterBody, CreateTagBody, CreateZoneBody, DELETE_MODES, HOST_ACTIONS, LoginBody,
  parseBody, UpdateGlobalConfigBody, UpdateSystemTagBody,
} from '../../protocol/api.ts';
import { HkError, invalidArgument, notFound, toHkError, tooLarge } from '../../protocol/errors.ts';
import { parseQuery } from '../../protocol/query.ts';
import {
  type ClusterRow, type HostRow, type Kind, RESOURCES, type ResourceName, type ResourceSpec, SESSION_SCHEMA_CLASS,
  type TagRow, type ZoneRow,
} from '../../protocol/resources.ts';
import { inMaintenance } from '../../protocol/states.ts';
import { formatZStackDate, isUuid } from '../../protocol/values.ts';
import type { Core } from '../core.ts';
import { agentRouter } from './agent-api.ts';
import { createBootstrapToken } from '../services/bootstrap.ts';
import type { JobHandle } from '../services/jobs.ts';
import {
  createCluster, createZone, type DeleteMode, deleteCluster, deleteHost, deleteZone, hostRef, insertHost, updateHost,
} from '../services/inventory.ts';
import { createTag, deleteTag, updateSystemTag } from '../services/tags.ts';
import { HostAgents } from '../agents/host-agents.ts';
import { KEEP_ON_FAILURE_TAG } from '../deploy/deployer.ts';
import type { Tx } from '../store/repository.ts';

export const BODY_LIMIT = '256kb';

type Rec = Record<string, unknown>;

/** A stored row as the API shows it: exactly the inventory fields, dates in ZStack's format. */
export function toInventory(res: ResourceSpec, row: object, fields?: readonly string[]): Rec {
  const r = row as Rec;
  const out: Rec = {};
  for (const f of fields ?? res.inventoryFields) {
    const v = r[f];
    out[f] = res.fields[f]?.type === 'date' && typeof v === 'number' ? formatZStackDate(v) : v ?? null;
  }
  return out;
}

const one = (res: ResourceSpec, row: object) => ({ inventory: toInventory(res, row), schema: { inventory: res.schemaClass } });

function many(res: ResourceSpec, rows: object[], fields?: string[], total?: number): Rec {
  const schema: Record<string, string> = {};
  const inventories = rows.map((r, i) => {
    schema[`inventories[${i}]`] = res.schemaClass;
    return toInventory(res, r, fields);
  });
  return { inventories, ...(total !== undefined ? { total } : {}), schema };
}

const tagResource = (t: TagRow) => (t.type === 'System' ? RESOURCES.systemTag : RESOURCES.userTag);

function sendError(res: Response, err: HkError): void {
  res.status(err.status).json({ error: err.toBody() });
}

function sessionOf(req: Request): string | undefined {
  const h = req.get('authorization');
  const m = h ? /^OAuth\s+(\S+)$/i.exec(h.trim()) : null;
  return m?.[1];
}

function deleteModeOf(req: Request): DeleteMode {
  const extra = Object.keys(req.query).filter((k) => k !== 'deleteMode');
  if (extra.length > 0) throw invalidArgument(`query parameter[${extra[0]}] is unknown; only deleteMode is taken`);
  const m = req.query.deleteMode ?? 'Permissive';
  if (typeof m !== 'string' || !(DELETE_MODES as readonly string[]).includes(m)) {
    throw invalidArgument(`deleteMode[${String(m)}] must be one of ${DELETE_MODES.join(', ')}`);
  }
  return m as DeleteMode;
}

function pathUuid(req: Request, what: string): string {
  const u = req.params.uuid as string;
  if (!isUuid(u)) throw notFound(`${what}[uuid:${u}] does not exist: not a 32-hex-digit uuid`);
  return u;
}

export function createApp(core: Core): express.Express {
  const { repo, clock, log, configs, jobs, auth, hosts, agents, deployer } = core;
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
  const api = express.Router();
  app.use('/zstack', api);

  /** Wraps an async handler so its errors reach the error middleware. */
  const h = (fn: (req: Request, res: Response) => Promise<void>) => (req: Request, res: Response, next: NextFunction) => {
    fn(req, res).catch(next);
  };

  api.put('/v1/accounts/login', json, h(async (req, res) => {
    const body = parseBody(LoginBody, req.body);
    const s = await auth.login(body.logInByAccount.accountName, body.logInByAccount.password);
    res.status(200).json({
      inventory: { uuid: s.uuid, accountUuid: s.accountUuid, userUuid: s.accountUuid, expiredDate: formatZStackDate(s.expiredDate), createDate: formatZStackDate(s.createDate) },
      schema: { inventory: SESSION_SCHEMA_CLASS },
    });
  }));

  // Everything below needs a session.
  api.use('/v1', (req, _res, next) => {
    auth.check(sessionOf(req)).then(() => next(), next);
  });
  // Bodies are read only once the caller is known.
  api.use(json);

  api.delete('/v1/accounts/sessions/:uuid', h(async (req, res) => {
    await auth.logout(req.params.uuid as string);
    res.status(200).json({});
  }));

  // ---- jobs ------------------------------------------------------------------------------

  api.get('/v1/api-jobs/:uuid', h(async (req, res) => {
    const job = await jobs.get(req.params.uuid as string);
    if (!job) throw notFound(`job[uuid:${req.params.uuid}] is not found or has expired`);
    if (job.status === 'Running') res.status(202).json(job.progress ? { progress: job.progress } : {});
    else if (job.status === 'Succeeded') res.status(200).json(job.result ?? {});
    else res.status(503).json({ error: job.error });
  }));

  const location = (req: Request, id: string) => `${req.protocol}://${req.get('host')}/zstack/v1/api-jobs/${id}`;

  function webHookOf(req: Request): string | undefined {
    const w = req.get('x-web-hook');
    if (w === undefined) return undefined;
    try {
      const u = new URL(w);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      throw invalidArgument(`header X-Web-Hook[${w}] must be an http(s) URL`);
    }
    return w;
  }

  /** The job id (X-Job-UUID or a new one) and web hook of a request, checked. */
  interface JobHeaders { id: string; hook?: string }
  async function jobHeaders(req: Request): Promise<JobHeaders> {
    const hook = webHookOf(req);
    return { id: await jobs.newId(req.get('x-job-uuid')), hook };
  }

  /** Store-only work: the change and the finished job commit together, then 202. */
  async function instant(req: Request, res: Response, apiName: string, work: (tx: Tx) => Promise<unknown>, hdr?: JobHeaders): Promise<void> {
    const { id, hook } = hdr ?? (await jobHeaders(req));
    await jobs.instant(id, apiName, work, hook);
    res.status(202).json({ location: location(req, id) });
  }

  /** Work that talks to agents: a Running job is stored, then 202; the work goes on. */
  async function long(req: Request, res: Response, apiName: string, work: (job: JobHandle) => Promise<unknown>, hdr: JobHeaders, prepare?: (tx: Tx) => Promise<void>): Promise<void> {
    await jobs.long(hdr.id, apiName, work, hdr.hook, prepare);
    res.status(202).json({ location: location(req, hdr.id) });
  }

  // ---- queries -----------------------------------------------------------------------------

  function queryRoute(name: ResourceName, scope?: Record<string, string>, byUuid = true) {
    const res = RESOURCES[name] as ResourceSpec;
    const run = h(async (req, out) => {
      const spec = parseQuery(res, req.query as Rec);
      if (req.params.uuid !== undefined) {
        if (!isUuid(req.params.uuid)) throw notFound(`${res.path}[uuid:${req.params.uuid}] does not exist`);
        const row = await repo.get(res.kind, req.params.uuid as string);
        const visible = row && Object.entries(scope ?? {}).every(([k, v]) => (row as unknown as Rec)[k] === v);
        if (!visible) throw notFound(`${res.path}[uuid:${req.params.uuid}] does not exist`);
        out.status(200).json(many(res, [row], spec.fields));
        return;
      }
      const r = await repo.query(res, spec, scope);
      if (spec.count) out.status(200).json({ total: r.total });
      else out.status(200).json(many(res, r.rows, spec.fields, spec.replyWithCount ? r.total : undefined));
    });
    api.get(`/v1/${res.path}`, run);
    if (byUuid) api.get(`/v1/${res.path}/:uuid`, run);
  }
  queryRoute('zone');
  queryRoute('cluster');
  queryRoute('host');
  queryRoute('vm');
  queryRoute('systemTag', { type: 'System' });
  queryRoute('userTag', { type: 'User' });
  // Configs are addressed by category/name, not uuid: no /:uuid form.
  queryRoute('config', undefined, false);

  // ---- zones and clusters ------------------------------------------------------------------

  api.post('/v1/zones', h(async (req, res) => {
    const b = parseBody(CreateZoneBody, req.body);
    await instant(req, res, 'CreateZone', async (tx) => one(RESOURCES.zone, await createZone(tx, clock.now(), b.params, b)));
  }));
  api.post('/v1/clusters', h(async (req, res) => {
    const b = parseBody(CreateClusterBody, req.body);
    await instant(req, res, 'CreateCluster', async (tx) => one(RESOURCES.cluster, await createCluster(tx, clock.now(), b.params, b)));
  }));

  function deleteRoute<R>(
    path: string, kind: Kind, what: string, apiName: string, del: (tx: Tx, now: number, uuid: string, mode: DeleteMode) => Promise<R>,
    /** Runs once the deletion is committed (never when it was refused or failed). */
    after?: (deleted: R) => void,
  ) {
    api.delete(`/v1/${path}/:uuid`, h(async (req, res) => {
      const uuid = pathUuid(req, what);
      const mode = deleteModeOf(req);
      if (!(await repo.get(kind, uuid))) throw notFound(`${what}[uuid:${uuid}] does not exist`);
      const hdr = await jobHeaders(req);
      let deleted: R | undefined;
      const run = async () => {
        await instant(req, res, apiName, async (tx) => {
          deleted = await del(tx, clock.now(), uuid, mode);
          log.info({ [kind]: uuid, deleteMode: mode }, `${what} deleted`);
          return {};
        }, hdr);
        after?.(deleted as R);
      };
      // A host's deletion waits its turn in the host's queue: an add or reconnect in progress
      // finishes (or fails) first, so nothing is deployed to a host that no longer exists.
      await (kind === 'host' ? hosts.queue.run(uuid, run) : run());
    }));
  }
  deleteRoute('zones', 'zone', 'zone', 'DeleteZone', deleteZone);
  deleteRoute('clusters', 'cluster', 'cluster', 'DeleteCluster', deleteCluster);
  deleteRoute('hosts', 'host', 'host', 'DeleteHost', deleteHost, (row) => {
    agents.forgetHost(row.uuid);
    // The record is gone whatever happens on the host; undoing the deployment there (agent
    // stopped, its secret and our key removed) is best effort, after the answer.
    deployer.stopAgent(row).then(
      (stopped) => stopped && log.info({ host: row.uuid }, 'agent stopped on the deleted host'),
      (err) => log.warn({ host: row.uuid, err: (err as Error).message }, 'could not stop the agent on the deleted host'),
    );
  });

  // ---- hosts -------------------------------------------------------------------------------

  api.post('/v1/hosts/kvm', h(async (req, res) => {
    const b = parseBody(AddKvmHostBody, req.body);
    // The password goes to the deployer's first SSH login and nowhere else: not the store,
    // not the job, not the log.
    const { username, password, ...params } = b.params;
    const keep = (b.systemTags ?? []).includes(KEEP_ON_FAILURE_TAG);
    const tags = { ...b, systemTags: b.systemTags?.filter((t) => t !== KEEP_ON_FAILURE_TAG) };
    const hdr = await jobHeaders(req);
    let uuid = '';
    await long(req, res, 'AddKVMHost', async (job) => one(RESOURCES.host, await deployer.add(uuid, { username, password }, keep, job)), hdr, async (tx) => {
      const host = await insertHost(tx, clock.now(), params, 'Connecting', 'deploying the agent', tags);
      await tx.update<HostRow>('host', host.uuid, { agentSecret: HostAgents.newSecret(), agentPort: deployer.agentPort, deployPhase: 'login' });
      uuid = host.uuid;
      log.info({ host: host.uuid, managementIp: host.managementIp, sshPort: host.sshPort, user: username }, 'adding host');
    });
  }));

  api.post('/v1/hosts/bootstrap-tokens', h(async (req, res) => {
    const b = parseBody(BootstrapTokenBody, req.body);
    const hdr = await jobHeaders(req);
    let shown: Rec | undefined;
    // The token is shown once, in this answer; the job keeps the inventory without it.
    await jobs.instant(hdr.id, 'CreateBootstrapToken', async (tx) => {
      const { row, token } = await createBootstrapToken(tx, clock.now(), b.params.clusterUuid, b.params.ttlSeconds);
      const inv = { uuid: row.uuid, clusterUuid: row.clusterUuid, expiredDate: formatZStackDate(row.expiredDate) };
      shown = { inventory: { ...inv, token } };
      return { inventory: { ...inv, token: '(shown once, when created)' } };
    }, hdr.hook);
    res.status(200).json(shown);
  }));

  api.put('/v1/hosts/:uuid/actions', h(async (req, res) => {
    const uuid = pathUuid(req, 'host');
    const body = req.body as Rec | undefined;
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw invalidArgument('body must be an object holding one action');
    const actions = Object.keys(body).filter((k) => k !== 'systemTags' && k !== 'userTags');
    const known = Object.keys(HOST_ACTIONS);
    if (actions.length !== 1 || !known.includes(actions[0]!)) {
      throw invalidArgument(`body must hold exactly one action of ${known.join(', ')}; got ${actions.join(', ') || 'none'}`);
    }
    const action = actions[0] as keyof typeof HOST_ACTIONS;
    const params = parseBody(HOST_ACTIONS[action], body[action], action) as Rec;
    parseBody(ActionTags, { systemTags: body.systemTags, userTags: body.userTags });
    // Headers are checked before anything can be refused for the host's sake.
    const hdr = await jobHeaders(req);
    const host = await hosts.mustGet(uuid);
    switch (action) {
      case 'changeHostState': {
        const event = hosts.checkStateEvent(host, params.stateEvent as never);
        if (event === 'preMaintain') {
          await long(req, res, 'ChangeHostState', async (job) => one(RESOURCES.host, await hosts.maintain(uuid, job)), hdr);
          return;
        }
        await hosts.queue.run(uuid, () =>
          instant(req, res, 'ChangeHostState', async (tx) => one(RESOURCES.host, await hosts.applyStateEvent(tx, uuid, event)), hdr),
        );
        // Out of maintenance: a full reconnect catches up on what the host missed (ZStack does the same).
        if (inMaintenance(host.state) && host.agentSecret) {
          void agents.connect(uuid).catch((err) => log.info({ host: uuid, err: (err as Error).message }, 'reconnect after maintenance failed'));
        }
        return;
      }
      case 'updateHost':
        await instant(req, res, 'UpdateHost', async (tx) => one(RESOURCES.host, await updateHost(tx, clock.now(), uuid, params)), hdr);
        return;
      case 'reconnectHost': {
        if (inMaintenance(host.state)) {
          throw new HkError('SYS.1006', `host[uuid:${uuid}, state:${host.state}] is in maintenance: enable or disable it first`);
        }
        if (host.deployPhase === 'login' || deployer.isDeploying(uuid)) {
          throw new HkError('SYS.1006', `${hostRef(host)} is being added (its agent is being deployed): wait for AddKVMHost to finish`);
        }
        HostAgents.target(host); // refuses at once when the host has no agent credentials
        await long(req, res, 'ReconnectHost', async (job) => {
          try {
            return one(RESOURCES.host, await deployer.reconnect(uuid, job));
          } catch (err) {
            agents.retryLater(uuid, err);
            const e = err as HkError;
            throw new HkError('HOST.1002', `unable to reconnect ${hostRef(host)}: ${e.details ?? e.message}`);
          }
        }, hdr);
        return;
      }
    }
  }));

  // ---- global configurations ---------------------------------------------------------------

  api.put('/v1/global-configurations/:category/:name/actions', h(async (req, res) => {
    const b = parseBody(UpdateGlobalConfigBody, req.body);
    const { category, name } = req.params as { category: string; name: string };
    let row: Awaited<ReturnType<typeof configs.prepareUpdate>> | undefined;
    await instant(req, res, 'UpdateGlobalConfig', async (tx) => {
      row = await configs.prepareUpdate(tx, category, name, b.updateGlobalConfig.value);
      return one(RESOURCES.config, row);
    });
    configs.applied(row!);
  }));

  // ---- tags --------------------------------------------------------------------------------

  for (const type of ['System', 'User'] as const) {
    const res = type === 'System' ? RESOURCES.systemTag : RESOURCES.userTag;
    api.post(`/v1/${res.path}`, h(async (req, out) => {
      const b = parseBody(CreateTagBody, req.body);
      await instant(req, out, type === 'System' ? 'CreateSystemTag' : 'CreateUserTag', async (tx) =>
        one(res, await createTag(tx, { ...b.params, type }, clock.now())));
    }));
  }
  api.put('/v1/system-tags/:uuid/actions', h(async (req, res) => {
    const uuid = pathUuid(req, 'system tag');
    const b = parseBody(UpdateSystemTagBody, req.body);
    if (!(await repo.get('tag', uuid))) throw notFound(`system tag[uuid:${uuid}] does not exist`);
    await instant(req, res, 'UpdateSystemTag', async (tx) => one(RESOURCES.systemTag, await updateSystemTag(tx, uuid, b.updateSystemTag.tag, clock.now())));
  }));
  api.delete('/v1/tags/:uuid', h(async (req, res) => {
    const uuid = pathUuid(req, 'tag');
    deleteModeOf(req);
    const tag = await repo.get<TagRow>('tag', uuid);
    if (!tag) throw notFound(`tag[uuid:${uuid}] does not exist`);
    await instant(req, res, 'DeleteTag', async (tx) => {
      await deleteTag(tx, uuid);
      return {};
    });
  }));

  // ---- fallbacks ---------------------------------------------------------------------------

  app.use((req, res) => {
    sendError(res, notFound(`no API at ${req.method} ${req.path}`));
  });

  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    const e = err as { type?: string; status?: number; message?: string };
    let hk: HkError;
    if (e?.type === 'entity.parse.failed') hk = invalidArgument(`request body is not valid JSON: ${e.message}`);
    else if (e?.type === 'entity.too.large') hk = tooLarge(`request body is larger than ${BODY_LIMIT}`);
    else if (e?.type && typeof e.status === 'number' && e.status < 500) hk = invalidArgument(`unreadable request body: ${e.message}`);
    else hk = toHkError(err);
    if (hk.code === 'SYS.1000') log.error({ method: req.method, path: req.path, err: (err as Error)?.stack }, 'internal error');
    if (!res.headersSent) sendError(res, hk);
  });

  return app;
}

