/**
 * VMs in the store: rows, the state rules (protocol/vm.ts), placement (the allocator over a
 * snapshot read in the same transaction that records the choice) and the capacity that
 * follows every change. Store only: talking to agents is controller/flows/vm-ops.ts.
 */
import { HkError, invalidArgument, notFound, operationError } from '../../protocol/errors.ts';
import type { AgentVm } from '../../protocol/agent.ts';
import type { HostRow, VmNic, VmRow, VmState } from '../../protocol/resources.ts';
import { inMaintenance } from '../../protocol/states.ts';
import { type MigrationRow, takesNewWork, VM_OPERATION_STATES, type VmOperation, vmRef } from '../../protocol/vm.ts';
import { allocate, explainNoHost, pickBest, type PlacementRequest } from '../allocator/allocator.ts';
import type { ReadOps, Tx } from '../store/repository.ts';
import { recompute, recomputeAll, type ReservedOf, snapshotFor } from './capacity.ts';
import type { GlobalConfigs } from './configs.ts';
import { hostRef } from './inventory.ts';
import { recordEvent, severityOf } from '../events.ts';

/** Records a VM's state change in the event log (heard after the transaction commits). */
async function vmEvent(tx: Tx, vm: Pick<VmRow, 'uuid' | 'name'>, hostUuid: string | null, from: VmState | null, to: VmState): Promise<void> {
  if (from === to) return;
  await recordEvent(tx, {
    type: 'VmStateChanged', resourceType: 'VmInstanceVO', resourceUuid: vm.uuid, resourceName: vm.name, hostUuid,
    from, to, severity: severityOf('VmStateChanged', to), message: `vm[name:${vm.name}, uuid:${vm.uuid}] ${from ?? 'new'} -> ${to}`,
  });
}

export { vmRef };

export async function mustGetVm(r: ReadOps, uuid: string): Promise<VmRow> {
  const vm = await r.get<VmRow>('vm', uuid);
  if (!vm || vm.state === 'Destroyed') throw notFound(`vm[uuid:${uuid}] does not exist`);
  return vm;
}

/** Refuses an operation the VM's state does not take, naming the VM and the states that would. */
export function checkVmOperation(vm: VmRow, op: VmOperation): void {
  if (!VM_OPERATION_STATES[op].includes(vm.state)) {
    throw operationError(`${vmRef(vm)} cannot ${op}: only a VM in state ${VM_OPERATION_STATES[op].join(', ')} can`);
  }
}

/**
 * A host in PreMaintenance or Maintenance runs no VM operation (ZStack's semantics), except
 * what its own maintenance does; a Disabled host keeps its running VMs, which may be stopped
 * or migrated away, but takes nothing new (that is the allocator's rule).
 */
export function checkHostRunsOps(host: HostRow, vm: VmRow, op: VmOperation): void {
  if (inMaintenance(host.state)) {
    throw operationError(`${vmRef(vm)} cannot ${op}: its ${hostRef(host)} is in maintenance, which runs no VM operation`);
  }
  if (host.status !== 'Connected') {
    throw new HkError('HOST.1010', `${vmRef(vm)} cannot ${op}: its ${hostRef(host)} is ${host.status}`);
  }
}

/** A designated host that cannot take new work is refused with the reason, not silently skipped. */
export function checkTakesNewWork(host: HostRow, what: string): void {
  if (!takesNewWork(host)) {
    throw operationError(`${hostRef(host)} cannot take ${what}: only an Enabled and Connected host takes a new, started or migrated-in VM`);
  }
}

/**
 * Picks a host for `req` among the snapshot read through `tx`, or throws
 * HOST_ALLOCATION.1000 saying why each host in scope was dropped.
 */
export async function place(tx: ReadOps, configs: GlobalConfigs, reserved: ReservedOf, req: PlacementRequest, what: string): Promise<HostRow> {
  const snap = await snapshotFor(tx, configs, reserved, req);
  const best = pickBest(snap, req);
  if (!best) {
    const p = allocate(snap, req);
    const err = new HkError('HOST_ALLOCATION.1000', `no host for ${what} (memory ${req.memorySize} B, ${req.cpuNum} CPUs): ${explainNoHost(p, req)}`);
    // How many hosts each reason dropped, for the metrics (read where the job finishes).
    const refusals: Record<string, number> = {};
    for (const d of p.dropped) refusals[d.reason] = (refusals[d.reason] ?? 0) + 1;
    throw Object.assign(err, { refusals });
  }
  return (await tx.get<HostRow>('host', best.uuid))!;
}

export interface NewVm {
  name: string;
  memorySize: number;
  cpuNum: number;
  vmNics: VmNic[];
}

/** Records a new VM placed on `host` (state Starting, or Stopped for CreateStopped) and its capacity. */
export async function insertVm(tx: Tx, configs: GlobalConfigs, now: number, uuid: string, v: NewVm, host: HostRow, state: VmState): Promise<VmRow> {
  for (const nic of v.vmNics) {
    if ((await tx.find<VmRow>('vm', { 'vmNics.ip': nic.ip })).some((o) => o.state !== 'Destroyed')) {
      throw invalidArgument(`vmNics ip[${nic.ip}] is already used by another VM`);
    }
  }
  const vm = await tx.insert<VmRow>('vm', {
    uuid, name: v.name, hostUuid: host.uuid, lastHostUuid: null, clusterUuid: host.clusterUuid, zoneUuid: host.zoneUuid,
    state, memorySize: v.memorySize, cpuNum: v.cpuNum, vmNics: v.vmNics, createDate: now, lastOpDate: now,
  });
  await recompute(tx, host.uuid, configs);
  return vm;
}

/** Moves a VM row to a new state (and host), recomputing the capacity of every host involved. */
export async function setVm(tx: Tx, configs: GlobalConfigs, now: number, uuid: string, patch: Partial<VmRow>): Promise<VmRow> {
  const before = await tx.get<VmRow>('vm', uuid);
  if (!before) throw notFound(`vm[uuid:${uuid}] does not exist`);
  const after = await tx.update<VmRow>('vm', uuid, { ...patch, lastOpDate: now });
  await vmEvent(tx, after, after.hostUuid ?? before.hostUuid, before.state, after.state);
  if (before.state !== after.state || before.hostUuid !== after.hostUuid || before.memorySize !== after.memorySize || before.cpuNum !== after.cpuNum) {
    await recomputeAll(tx, [before.hostUuid, after.hostUuid], configs);
  }
  return after;
}

/** The VM row fields an agent's report settles: state, and the host it is on. */
export function stateFromAgent(a: Pick<AgentVm, 'state'>): VmState {
  switch (a.state) {
    case 'Running':
      return 'Running';
    case 'Paused':
      return 'Paused';
    case 'Stopped':
      return 'Stopped';
    case 'Migrating':
      return 'Migrating';
    default:
      return 'Unknown';
  }
}

/** Records where a migration ended: on `hostUuid` in `state`, or nowhere (Stopped). Drops the migration row. */
export async function settleMigration(tx: Tx, configs: GlobalConfigs, now: number, m: MigrationRow, where: { hostUuid: string; state: VmState } | null): Promise<VmRow | undefined> {
  if (await tx.get<MigrationRow>('migration', m.uuid)) await tx.remove('migration', m.uuid);
  const vm = await tx.get<VmRow>('vm', m.uuid);
  if (!vm) {
    await recomputeAll(tx, [m.sourceHostUuid, m.targetHostUuid], configs);
    return undefined;
  }
  let patch: Partial<VmRow>;
  if (!where) patch = { state: 'Stopped', hostUuid: null, lastHostUuid: m.sourceHostUuid };
  else if (where.hostUuid === m.sourceHostUuid) patch = { state: where.state, hostUuid: m.sourceHostUuid };
  else {
    const target = await tx.get<HostRow>('host', where.hostUuid);
    patch = { state: where.state, hostUuid: where.hostUuid, lastHostUuid: m.sourceHostUuid, clusterUuid: target?.clusterUuid ?? vm.clusterUuid, zoneUuid: target?.zoneUuid ?? vm.zoneUuid };
  }
  const out = await tx.update<VmRow>('vm', m.uuid, { ...patch, lastOpDate: now });
  await vmEvent(tx, out, out.hostUuid ?? m.sourceHostUuid, vm.state, out.state);
  await recomputeAll(tx, [m.sourceHostUuid, m.targetHostUuid], configs);
  return out;
}

/**
 * Applies what a host's agent reports about its VMs (a full list at connect, or one VM pushed
 * over the channel): the agent is the truth. VMs the controller did not know appear; VMs the
 * host no longer has are Stopped (their last host kept) unless a migration is settling them.
 * `full` says `vms` is everything on the host.
 */
export async function applyAgentReport(tx: Tx, configs: GlobalConfigs, now: number, host: HostRow, vms: AgentVm[], full: boolean, gone: string[] = []): Promise<void> {
  const migrating = new Set<string>();
  for (const m of await tx.find<MigrationRow>('migration', { sourceHostUuid: host.uuid })) migrating.add(m.uuid);
  for (const m of await tx.find<MigrationRow>('migration', { targetHostUuid: host.uuid })) migrating.add(m.uuid);
  const seen = new Set<string>();
  for (const a of vms) {
    seen.add(a.uuid);
    // A VM with a migration in flight is settled by the migration's flow, which asks both ends.
    if (migrating.has(a.uuid)) continue;
    const state = stateFromAgent(a);
    const row = await tx.get<VmRow>('vm', a.uuid);
    if (!row) {
      await tx.insert<VmRow>('vm', {
        uuid: a.uuid, name: a.name, hostUuid: host.uuid, lastHostUuid: null, clusterUuid: host.clusterUuid, zoneUuid: host.zoneUuid,
        state, memorySize: a.memorySize, cpuNum: a.cpuNum, vmNics: a.vmNics, createDate: now, lastOpDate: now,
      });
      await vmEvent(tx, a, host.uuid, null, state);
      continue;
    }
    if (row.state === 'Destroyed') continue;
    const patch: Partial<VmRow> = {};
    if (row.state !== state) patch.state = state;
    if (row.hostUuid !== host.uuid) {
      Object.assign(patch, { hostUuid: host.uuid, lastHostUuid: row.hostUuid ?? row.lastHostUuid, clusterUuid: host.clusterUuid, zoneUuid: host.zoneUuid });
    }
    if (Object.keys(patch).length > 0) await tx.update<VmRow>('vm', a.uuid, { ...patch, lastOpDate: now });
    if (patch.state) await vmEvent(tx, row, host.uuid, row.state, patch.state);
  }
  const goneSet = new Set(gone);
  const candidates = full ? await tx.find<VmRow>('vm', { hostUuid: host.uuid }) : await Promise.all(gone.map((u) => tx.get<VmRow>('vm', u)));
  for (const row of candidates) {
    if (!row || seen.has(row.uuid) || migrating.has(row.uuid) || row.hostUuid !== host.uuid) continue;
    if (!full && !goneSet.has(row.uuid)) continue;
    if (row.state === 'Destroyed') continue;
    await tx.update<VmRow>('vm', row.uuid, { state: 'Stopped', hostUuid: null, lastHostUuid: host.uuid, lastOpDate: now });
    await vmEvent(tx, row, host.uuid, row.state, 'Stopped');
  }
  await recompute(tx, host.uuid, configs);
}

/**
 * A host went Disconnected: its VMs that may be running are Unknown until it reconnects and
 * reports them (the controller cannot see them; it never restarts them elsewhere).
 */
export async function markHostVmsUnknown(tx: Tx, now: number, hostUuid: string): Promise<number> {
  let n = 0;
  for (const vm of await tx.find<VmRow>('vm', { hostUuid })) {
    if (vm.state === 'Stopped' || vm.state === 'Destroyed' || vm.state === 'Unknown' || vm.state === 'Created') continue;
    await tx.update<VmRow>('vm', vm.uuid, { state: 'Unknown', lastOpDate: now });
    await vmEvent(tx, vm, hostUuid, vm.state, 'Unknown');
    n++;
  }
  return n;
}
