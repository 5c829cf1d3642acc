/**
 * VMs: CreateVmInstance (Hostkeeper's shape), and ZStack's StartVmInstance, StopVmInstance,
 * RebootVmInstance, MigrateVm, DestroyVmInstance and GetVmMigrationCandidateHosts (queries
 * are queries.ts). Every action answers 202; the work goes through the VM's host agent.
 */
import { randomBytes } from 'node:crypto';
import { CreateVmBody, parseBody, VM_ACTIONS } from '../../protocol/api.ts';
import { invalidArgument, notFound } from '../../protocol/errors.ts';
import { many, one } from '../../protocol/inventory.ts';
import { type HostRow, RESOURCES } from '../../protocol/resources.ts';
import { newUuid } from '../../protocol/values.ts';
import { allocate, describeDrop } from '../allocator/allocator.ts';
import { snapshotFor } from '../services/capacity.ts';
import { MIGRATE_VM, type MigrateCtx } from '../flows/migrate-vm.ts';
import { mustGetVm } from '../services/vms.ts';
import { actionApiName, type Api, deleteModeOf, h, parseAction, pathUuid, type Rec } from './common.ts';

/** A MAC in QEMU's locally administered range 52:54:00 when none is given. */
const newMac = () => `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;

export function vmRoutes(api: Api): void {
  const { core, router } = api;
  const { repo, configs, vmOps, runner } = core;

  api.route('post', '/v1/vm-instances', 'CreateVmInstance', async (req, res, hdr) => {
    const b = parseBody(CreateVmBody, req.body);
    const p = b.params;
    if (p.resourceUuid && (await repo.get('vm', p.resourceUuid))) throw invalidArgument(`params.resourceUuid[${p.resourceUuid}] is already used`);
    const strategy = p.strategy ?? 'InstantStart';
    const request = {
      name: p.name, memorySize: p.memorySize, cpuNum: p.cpuNum, hostUuid: p.hostUuid, clusterUuid: p.clusterUuid, zoneUuid: p.zoneUuid, strategy,
      vmNics: (p.vmNics ?? []).map((n) => ({ ip: n.ip, mac: n.mac ?? newMac() })),
    };
    // Placement (a refusal says why no host fits) and the agent's create are the job's work.
    const uuid = p.resourceUuid ?? newUuid();
    await api.long(req, res, 'CreateVmInstance', async () => one(RESOURCES.vm, await vmOps.create(uuid, request)), hdr);
  });

  api.route('put', '/v1/vm-instances/:uuid/actions', actionApiName(VM_ACTIONS, 'VmInstanceAction'), async (req, res, hdr) => {
    const uuid = pathUuid(req, 'vm');
    const { action, params } = parseAction(req.body, VM_ACTIONS);
    await mustGetVm(repo, uuid);
    const fmt = (vm: object) => one(RESOURCES.vm, vm);
    switch (action) {
      case 'startVmInstance':
        await vmOps.check(uuid, 'start');
        await api.long(req, res, 'StartVmInstance', async () => fmt(await vmOps.start(uuid)), hdr);
        return;
      case 'stopVmInstance':
        await vmOps.check(uuid, 'stop');
        await api.long(req, res, 'StopVmInstance', async () => fmt(await vmOps.stop(uuid, (params.type as 'grace' | 'cold' | undefined) ?? 'grace')), hdr);
        return;
      case 'rebootVmInstance':
        await vmOps.check(uuid, 'reboot');
        await api.long(req, res, 'RebootVmInstance', async () => fmt(await vmOps.reboot(uuid)), hdr);
        return;
      case 'migrateVm': {
        const { vm } = await vmOps.check(uuid, 'migrate');
        const target = params.hostUuid as string | undefined;
        if (target && !(await repo.get('host', target))) throw invalidArgument(`migrateVm.hostUuid: host[uuid:${target}] does not exist`);
        const ctx: MigrateCtx = { vmUuid: uuid, sourceHostUuid: vm.hostUuid!, ...(target ? { targetHostUuid: target } : {}) };
        await runner.start(MIGRATE_VM, ctx, { uuid: hdr.id, webHook: hdr.hook });
        api.accepted(req, res, hdr.id);
        return;
      }
    }
  });

  api.route('delete', '/v1/vm-instances/:uuid', 'DestroyVmInstance', async (req, res, hdr) => {
    const uuid = pathUuid(req, 'vm');
    deleteModeOf(req);
    await vmOps.check(uuid, 'destroy');
    await api.long(req, res, 'DestroyVmInstance', async () => {
      await vmOps.destroy(uuid);
      return {};
    }, hdr);
  });

  // ZStack answers the candidate hosts as HostInventory; `dropped` adds why each other host does not fit.
  router.get('/v1/vm-instances/:uuid/migration-target-hosts', h(async (req, res) => {
    const uuid = pathUuid(req, 'vm');
    const vm = await repo.get<{ uuid: string; hostUuid: string | null; clusterUuid: string | null; memorySize: number; cpuNum: number }>('vm', uuid);
    if (!vm) throw notFound(`vm[uuid:${uuid}] does not exist`);
    const r = { clusterUuid: vm.clusterUuid ?? undefined, memorySize: vm.memorySize, cpuNum: vm.cpuNum, sourceHostUuid: vm.hostUuid ?? undefined };
    const p = allocate(await snapshotFor(repo, configs, await core.reservations.resolver(), r), r);
    const rows = await Promise.all(p.candidates.map((c) => repo.get<HostRow>('host', c.uuid)));
    res.status(200).json({
      ...many(RESOURCES.host, rows.filter((x): x is HostRow => !!x)),
      dropped: p.dropped.map((d) => ({ hostUuid: d.host.uuid, reason: d.reason, details: describeDrop(d, r) })),
    });
  }));
}
