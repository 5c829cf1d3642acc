/**
 * Hosts: AddKVMHost, bootstrap tokens, the host actions (ChangeHostState, UpdateHost,
 * ReconnectHost), DeleteHost and GetHostMaintenancePlan. Each parses, calls one method
 * (services/, flows/, deploy/) and formats.
 */
import { ActionTags, AddKvmHostBody, HOST_ACTIONS, parseBody } from '../../protocol/api.ts';
import { one } from '../../protocol/inventory.ts';
import { type HostRow, RESOURCES } from '../../protocol/resources.ts';
import { HostAgents } from '../agents/host-agents.ts';
import { controllerEndpoint } from './agent-api.ts';
import { KEEP_ON_FAILURE_TAG } from '../deploy/deployer.ts';
import { insertHost, updateHost } from '../services/inventory.ts';
import { actionApiName, type Api, deleteModeOf, h, parseAction, pathUuid, type Rec } from './common.ts';

export function hostRoutes(api: Api): void {
  const { core, router } = api;
  const { clock, log, hosts, deployer, hostOps, maintenance } = core;

  api.route('post', '/v1/hosts/kvm', 'AddKVMHost', async (req, res, hdr) => {
    const b = parseBody(AddKvmHostBody, req.body);
    // The password goes to the deployer's first SSH login and nowhere else: not the store,
    // not the job, not the log.
    const { username, password, ...params } = b.params;
    await hostOps.checkResolves(params.managementIp);
    const keep = (b.systemTags ?? []).includes(KEEP_ON_FAILURE_TAG);
    const tags = { ...b, systemTags: b.systemTags?.filter((t) => t !== KEEP_ON_FAILURE_TAG) };
    let uuid = '';
    await api.long(req, res, 'AddKVMHost', async (job) => one(RESOURCES.host, await deployer.add(uuid, { username, password }, keep, job)), hdr, async (tx) => {
      const host = await insertHost(tx, clock.now(), { ...params, agentPort: deployer.agentPort }, 'Connecting', 'deploying the agent', tags, controllerEndpoint(req));
      await tx.update<HostRow>('host', host.uuid, { agentSecret: HostAgents.newSecret(), agentPort: deployer.agentPort, deployPhase: 'login', deployBy: deployer.members?.uuid });
      uuid = host.uuid;
      log.info({ host: host.uuid, managementIp: host.managementIp, sshPort: host.sshPort, user: username }, 'adding host');
    });
  });

  router.get('/v1/hosts/:uuid/maintenance-plan', h(async (req, res) => {
    const uuid = pathUuid(req, 'host');
    await hosts.mustGet(uuid);
    res.status(200).json({ inventories: await maintenance.plan(uuid) });
  }));

  api.route('put', '/v1/hosts/:uuid/actions', actionApiName(HOST_ACTIONS, 'HostAction'), async (req, res, hdr) => {
    const uuid = pathUuid(req, 'host');
    const { action, params, body } = parseAction(req.body, HOST_ACTIONS);
    parseBody(ActionTags, { systemTags: body.systemTags, userTags: body.userTags });
    await hosts.mustGet(uuid);
    switch (action) {
      case 'changeHostState': {
        const change = await hostOps.changeState(uuid, params.stateEvent as never);
        if (change.kind === 'maintenance') {
          await maintenance.start(await hosts.mustGet(uuid), { uuid: hdr.id, webHook: hdr.hook });
          api.accepted(req, res, hdr.id);
          return;
        }
        await hosts.queue.run(uuid, () => api.instant(req, res, 'ChangeHostState', change.run, hdr));
        change.after();
        return;
      }
      case 'updateHost':
        await api.instant(req, res, 'UpdateHost', async (tx) => one(RESOURCES.host, await updateHost(tx, clock.now(), uuid, params, controllerEndpoint(req))), hdr);
        return;
      case 'reconnectHost': {
        const host = await hostOps.checkReconnect(uuid);
        await api.long(req, res, 'ReconnectHost', (job) => hostOps.reconnect(host, job), hdr);
        return;
      }
    }
  });

  api.route('delete', '/v1/hosts/:uuid', 'DeleteHost', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'host');
    const mode = deleteModeOf(req);
    const running = await hostOps.checkDelete(uuid, mode);
    if (running.length > 0) {
      await api.long(req, res, 'DeleteHost', async (job) => {
        await hostOps.delete(uuid, mode, running, job);
        return {};
      }, hdr);
      return;
    }
    // Nothing to stop: the record goes with its finished job in one transaction, in the host's queue.
    let deleted: HostRow | undefined;
    await hosts.queue.run(uuid, () => api.instant(req, res, 'DeleteHost', async (tx) => {
      deleted = await hostOps.deleteInTx(tx, uuid, mode);
      return {};
    }, hdr));
    if (deleted) hostOps.afterDelete(deleted);
  });
}
