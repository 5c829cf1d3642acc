/**
 * Maintenance: PreMaintenance is persisted first; the host's VMs then migrate,
 * `kvm / vm.migrationQuantity` at a time, each to a host the allocator picks in its cluster;
 * a VM that cannot migrate is stopped (grace, then cold); Unknown VMs are neither migrated
 * nor stopped (as ZStack) and are named in the result; then Maintenance.
 *
 * `host / maintenanceMode.ignoreError` false: a VM that can be neither migrated nor stopped
 * fails the job, the host returns to its earlier state and the error names every VM and its
 * cause. True: the host enters Maintenance anyway and the result lists what was left.
 *
 * `enable` or `disable` while PreMaintenance cancels: no new VM is picked, migrations in
 * flight finish (or settle back), moved VMs stay where they are, the host keeps the state
 * the admin asked for, and the job fails saying it was cancelled.
 *
 * A durable flow (runner.ts): each VM's phase is saved as it changes, and migrations are
 * recorded rows, so a controller killed at any moment finishes the work when it starts: it
 * settles every recorded migration by asking both agents, then carries on with the rest.
 */
import { HkError } from '../../protocol/errors.ts';
import type { HostRow, VmRow } from '../../protocol/resources.ts';
import type { HostState, HostStateEvent } from '../../protocol/states.ts';
import { HOLDING_STATES, vmRef } from '../../protocol/vm.ts';
import { allocate, explainNoHost, type HostSnapshot, pickBest, type PlacementRequest } from '../allocator/allocator.ts';
import { one } from '../../protocol/inventory.ts';
import { RESOURCES } from '../../protocol/resources.ts';
import type { Logger } from '../log.ts';
import type { GlobalConfigs } from '../services/configs.ts';
import { type Reservations, snapshotFor } from '../services/capacity.ts';
import type { Hosts } from '../services/hosts.ts';
import { hostRef } from '../services/inventory.ts';
import type { JobRow } from '../services/jobs.ts';
import type { Repository, Tx } from '../store/repository.ts';
import { recordEvent } from '../events.ts';
import type { DurableStep, FlowHandle, FlowRow, FlowRunner } from './runner.ts';
import type { VmOps } from './vm-ops.ts';

export const MAINTENANCE = 'maintenance';

export type ItemPhase = 'pending' | 'migrating' | 'migrated' | 'stopping' | 'stopped' | 'failed';

export interface EvacuationItem {
  uuid: string;
  name: string;
  phase: ItemPhase;
  target?: string;
  /** Why it did not migrate (then was stopped), or why it could be neither migrated nor stopped. */
  error?: string;
  attempts: number;
}

export interface MaintenanceCtx {
  hostUuid: string;
  /** The state to return to when the flow fails. */
  original: 'Enabled' | 'Disabled';
  items: EvacuationItem[];
  /** Unknown VMs, named in the result: neither migrated nor stopped. */
  unknown: string[];
  cancelled?: HostState;
}

export interface PlanEntry {
  vmUuid: string;
  name: string;
  state: VmRow['state'];
  action: 'migrate' | 'stop' | 'skip';
  targetHostUuid?: string;
  targetHostName?: string;
  reason?: string;
}

/**
 * A VM's phase when an evacuation resumes, from its saved phase and where the store (its
 * migrations already settled from the agents) says it is now. Finished phases stand; an
 * unfinished one follows the VM: gone or elsewhere is migrated, Stopped on the host is
 * stopped, still running on the host is pending (tried again).
 */
export function phaseAfterRestart(item: Pick<EvacuationItem, 'phase' | 'target'>, vm: Pick<VmRow, 'hostUuid' | 'state'> | undefined, hostUuid: string): Pick<EvacuationItem, 'phase' | 'target'> {
  if (item.phase !== 'pending' && item.phase !== 'migrating' && item.phase !== 'stopping') return item;
  if (!vm) return { phase: 'migrated', target: item.target };
  if (vm.hostUuid !== hostUuid) return { phase: 'migrated', target: vm.hostUuid ?? undefined };
  if (vm.state === 'Stopped') return { phase: 'stopped', target: undefined };
  return { phase: 'pending', target: undefined };
}

/** Rounds of "list what is still on the host and evacuate it" (a VM may appear meanwhile). */
const ROUNDS = 3;
/** Migration attempts per VM before it is stopped instead. */
const ATTEMPTS = 2;

export class Maintenance {
  constructor(
    private readonly repo: Repository,
    private readonly log: Logger,
    private readonly configs: GlobalConfigs,
    private readonly hosts: Hosts,
    private readonly vms: VmOps,
    private readonly runner: FlowRunner,
    private readonly reservations: Reservations,
  ) {
    runner.define<MaintenanceCtx>({
      kind: MAINTENANCE,
      apiName: 'ChangeHostState',
      steps: this.steps(),
      result: async (ctx) => this.result(ctx),
      failure: (err, ctx) => (ctx.cancelled || err.code === 'HOST.1001' ? err : new HkError('HOST.1001', `maintenance of host[uuid:${ctx.hostUuid}] failed: ${err.details}`)),
    });
  }

  /** Starts maintenance of a Connected host (the API checked the event); a second one is refused. */
  async start(host: HostRow, job: { uuid: string; webHook?: string }, alsoInTx?: (tx: Tx) => Promise<void>): Promise<JobRow> {
    const original = host.state === 'Disabled' ? 'Disabled' : 'Enabled';
    const ctx: MaintenanceCtx = { hostUuid: host.uuid, original, items: [], unknown: [] };
    // Checked in the transaction that records the flow: two requests at once start one.
    return this.runner.start(MAINTENANCE, ctx, job, async (tx) => {
      const running = (await tx.find<FlowRow>('flow', { kind: MAINTENANCE })).filter(
        (f) => (f.status === 'Running' || f.status === 'RollingBack') && (f.ctx as MaintenanceCtx).hostUuid === host.uuid,
      );
      if (running.length > 0) throw new HkError('SYS.1006', `${hostRef(host)} is already entering maintenance`);
      await alsoInTx?.(tx);
    });
  }

  /** A state change of the host: in its queue, in one transaction that reads it first. */
  private inHost<T>(hostUuid: string, fn: (tx: Tx, host: HostRow | undefined) => Promise<T>): Promise<T> {
    return this.hosts.queue.run(hostUuid, () => this.repo.transaction(async (tx) => fn(tx, await tx.get<HostRow>('host', hostUuid))));
  }

  private steps(): DurableStep<MaintenanceCtx>[] {
    return [
      {
        name: 'enter-pre-maintenance',
        run: async (ctx) => {
          await this.inHost(ctx.hostUuid, async (tx, h) => {
              if (!h) throw new HkError('HOST.1001', `host[uuid:${ctx.hostUuid}] was deleted`);
              if (h.state !== 'PreMaintenance') {
                await this.hosts.applyStateEvent(tx, ctx.hostUuid, 'preMaintain');
                await recordEvent(tx, { type: 'MaintenanceStarted', resourceType: 'HostVO', resourceUuid: h.uuid, resourceName: h.name, hostUuid: h.uuid, message: `maintenance of host[name:${h.name}, uuid:${h.uuid}] started` });
              }
            });
        },
        // Back to where it was, unless an admin already chose another state (cancel).
        rollback: async (ctx) => {
          await this.inHost(ctx.hostUuid, async (tx, h) => {
              if (h) {
                const how = h.state === 'PreMaintenance' ? `failed; back to ${ctx.original}` : `stopped: the host was set to ${h.state}`;
                await recordEvent(tx, { type: 'MaintenanceFailed', severity: 'error', resourceType: 'HostVO', resourceUuid: h.uuid, resourceName: h.name, hostUuid: h.uuid, message: `maintenance of host[name:${h.name}, uuid:${h.uuid}] ${how}` });
              }
              if (h?.state !== 'PreMaintenance') return;
              const back: HostStateEvent = ctx.original === 'Disabled' ? 'disable' : 'enable';
              await this.hosts.applyStateEvent(tx, ctx.hostUuid, back);
            });
        },
      },
      { name: 'evacuate-vms', run: (ctx, f) => this.evacuate(ctx, f) },
      {
        name: 'enter-maintenance',
        run: async (ctx) => {
          await this.inHost(ctx.hostUuid, async (tx, h) => {
              if (!h) throw new HkError('HOST.1001', `host[uuid:${ctx.hostUuid}] was deleted`);
              if (h.state === 'Maintenance') return;
              if (h.state !== 'PreMaintenance') throw this.cancelledError(ctx, h.state);
              await this.hosts.applyStateEvent(tx, ctx.hostUuid, 'maintain');
              await recordEvent(tx, { type: 'MaintenanceDone', resourceType: 'HostVO', resourceUuid: h.uuid, resourceName: h.name, hostUuid: h.uuid, message: `host[name:${h.name}, uuid:${h.uuid}] is in Maintenance` });
            });
        },
      },
    ];
  }

  private cancelledError(ctx: MaintenanceCtx, state: HostState): HkError {
    ctx.cancelled = state;
    const moved = ctx.items.filter((i) => i.phase === 'migrated').length;
    const stopped = ctx.items.filter((i) => i.phase === 'stopped').length;
    return new HkError('HOST.1001', `maintenance of host[uuid:${ctx.hostUuid}] was cancelled: the host was set to ${state}; ${moved} VMs were migrated and stay where they are, ${stopped} were stopped`);
  }

  private async hostState(uuid: string): Promise<HostState | undefined> {
    return (await this.repo.get<HostRow>('host', uuid))?.state;
  }

  private async evacuate(ctx: MaintenanceCtx, f: FlowHandle<MaintenanceCtx>): Promise<void> {
    // A resume first settles the migrations it had in flight, asking both agents.
    for (const m of await this.vms.migrationsOf(f.uuid)) {
      const item = ctx.items.find((i) => i.uuid === m.uuid);
      let vm: VmRow | undefined;
      try {
        vm = await this.vms.resumeMigration(m, f.signal);
      } catch (err) {
        if (f.signal.aborted) throw err;
        if (item) Object.assign(item, { phase: 'failed', error: (err as Error).message });
        continue;
      }
      if (item) item.phase = vm?.hostUuid === m.targetHostUuid ? 'migrated' : 'pending';
      if (item && vm?.hostUuid === m.targetHostUuid) item.target = m.targetHostUuid;
    }
    // Phases saved before the crash may be stale: the store says where each VM is now.
    for (const item of ctx.items) {
      const vm = await this.repo.get<VmRow>('vm', item.uuid);
      Object.assign(item, phaseAfterRestart(item, vm, ctx.hostUuid));
    }
    await f.save(ctx);

    for (let round = 0; round < ROUNDS; round++) {
      await this.list(ctx);
      await f.save(ctx);
      const pending = () => ctx.items.find((i) => i.phase === 'pending');
      if (!pending()) break;
      const inFlight = new Set<EvacuationItem>();
      const report = () => {
        const done = ctx.items.filter((i) => i.phase !== 'pending' && i.phase !== 'migrating' && i.phase !== 'stopping').length;
        const now = [...inFlight].map((i) => `${i.phase === 'stopping' ? 'stopping' : 'migrating'} vm[uuid:${i.uuid}]${i.target ? ` -> host[uuid:${i.target}]` : ''}`);
        f.progressSoon({
          current: done, total: ctx.items.length, step: 'evacuate-vms',
          message: `${done}/${ctx.items.length} VMs done${now.length ? `; ${now.join(', ')}` : ''}`,
          items: [...inFlight].map((i) => ({ uuid: i.uuid, name: i.name, phase: i.phase, ...(i.target ? { target: i.target } : {}) })),
        });
      };
      // Item phases are saved coalesced: a resume derives them again from the store (the
      // VMs still on the host, the recorded migrations), so a lost update costs nothing.
      const worker = async () => {
        for (let item = pending(); item; item = pending()) {
          if (f.signal.aborted) return;
          // Claimed before any await, so no other worker takes the same VM.
          item.phase = 'migrating';
          const state = await this.hostState(ctx.hostUuid);
          if (state !== 'PreMaintenance') {
            item.phase = 'pending';
            ctx.cancelled = state;
            return;
          }
          inFlight.add(item);
          f.saveSoon(ctx);
          report();
          await this.evacuateOne(ctx, item, f);
          inFlight.delete(item);
          f.saveSoon(ctx);
          report();
        }
      };
      // The quantity is read per round, so a change takes effect without a restart.
      const quantity = Math.max(1, this.configs.getInt('kvm', 'vm.migrationQuantity'));
      await Promise.all(Array.from({ length: quantity }, worker));
      if (f.signal.aborted) return;
      if (ctx.cancelled) throw this.cancelledError(ctx, ctx.cancelled);
    }

    const failed = ctx.items.filter((i) => i.phase === 'failed');
    if (failed.length > 0 && !this.configs.getBool('host', 'maintenanceMode.ignoreError')) {
      const what = failed.map((i) => `vm[uuid:${i.uuid}, name:${i.name}]: ${i.error}`).join('; ');
      throw new HkError('HOST.1001', `${failed.length} VMs on host[uuid:${ctx.hostUuid}] could be neither migrated nor stopped, so the host returns to ${ctx.original} (set host/maintenanceMode.ignoreError to true to enter maintenance anyway): ${what}`);
    }
  }

  /** Adds the host's VMs that need moving to the items (first time, and each round). */
  private async list(ctx: MaintenanceCtx): Promise<void> {
    const on = await this.repo.find<VmRow>('vm', { hostUuid: ctx.hostUuid });
    const known = new Map(ctx.items.map((i) => [i.uuid, i]));
    ctx.unknown = on.filter((v) => v.state === 'Unknown').map((v) => v.uuid);
    for (const vm of on) {
      if (!HOLDING_STATES.has(vm.state) || vm.state === 'Unknown') continue;
      const item = known.get(vm.uuid);
      if (!item) ctx.items.push({ uuid: vm.uuid, name: vm.name, phase: 'pending', attempts: 0 });
      // Back on the host (a migration settled on the source): try again, a bounded number of times.
      else if (item.phase === 'migrated' && item.attempts < ATTEMPTS + 1) item.phase = 'pending';
    }
  }

  /** Migrate, else stop (grace, then cold); `failed` when neither works. */
  private async evacuateOne(ctx: MaintenanceCtx, item: EvacuationItem, f: FlowHandle<MaintenanceCtx>): Promise<void> {
    const vm = await this.repo.get<VmRow>('vm', item.uuid);
    if (!vm || vm.hostUuid !== ctx.hostUuid) return void (item.phase = 'migrated');
    if (!HOLDING_STATES.has(vm.state) || vm.state === 'Unknown') return void (item.phase = vm.state === 'Unknown' ? 'failed' : 'stopped');
    let why = '';
    if (vm.state === 'Running' || vm.state === 'Paused') {
      while (item.attempts < ATTEMPTS) {
        item.attempts++;
        try {
          const after = await this.vms.migrate(vm.uuid, {
            flowUuid: f.uuid, evacuating: true, fromHostUuid: ctx.hostUuid,
            onStart: (t) => {
              item.target = t.uuid;
            },
          });
          if (after.hostUuid !== ctx.hostUuid) {
            item.phase = 'migrated';
            item.target = after.hostUuid ?? undefined;
            return;
          }
        } catch (err) {
          if (f.signal.aborted) throw err;
          why = (err as HkError).details ?? (err as Error).message;
          // No host can take it: trying again will not change that.
          if ((err as HkError).code === 'HOST_ALLOCATION.1000') break;
        }
      }
    } else {
      why = `${vmRef(vm)} cannot be migrated in that state`;
    }
    item.target = undefined;
    item.phase = 'stopping';
    f.saveSoon(ctx);
    try {
      await this.vms.stopForEvacuation(vm.uuid, 'grace');
      item.phase = 'stopped';
      item.error = `stopped: it could not migrate (${why})`;
    } catch (err) {
      if (f.signal.aborted) throw err;
      item.phase = 'failed';
      item.error = `could not migrate (${why}) nor stop (${(err as HkError).details ?? (err as Error).message})`;
    }
  }

  private async result(ctx: MaintenanceCtx): Promise<unknown> {
    const host = await this.hosts.mustGet(ctx.hostUuid);
    const left = [
      ...ctx.items.filter((i) => i.phase === 'failed').map((i) => ({ uuid: i.uuid, name: i.name, reason: i.error })),
      ...ctx.unknown.map((uuid) => ({ uuid, reason: 'Unknown: its state could not be seen, so it was neither migrated nor stopped' })),
    ];
    return {
      ...one(RESOURCES.host, host),
      evacuation: {
        migrated: ctx.items.filter((i) => i.phase === 'migrated').map((i) => ({ uuid: i.uuid, name: i.name, hostUuid: i.target })),
        stopped: ctx.items.filter((i) => i.phase === 'stopped').map((i) => ({ uuid: i.uuid, name: i.name, reason: i.error })),
        left,
      },
    };
  }

  /**
   * GetHostMaintenancePlan: where each VM would go, or why it cannot, changing nothing. Each
   * planned move takes its capacity from the snapshot, so the plan never puts more on a host
   * than it holds.
   */
  async plan(hostUuid: string): Promise<PlanEntry[]> {
    const host = await this.hosts.mustGet(hostUuid);
    const vms = (await this.repo.find<VmRow>('vm', { hostUuid })).filter((v) => HOLDING_STATES.has(v.state));
    const snap = new Map<string, HostSnapshot>();
    for (const s of await snapshotFor(this.repo, this.configs, await this.reservations.resolver(), { clusterUuid: host.clusterUuid, memorySize: 0, cpuNum: 0 })) snap.set(s.uuid, { ...s });
    const out: PlanEntry[] = [];
    for (const vm of vms) {
      const base = { vmUuid: vm.uuid, name: vm.name, state: vm.state };
      if (vm.state === 'Unknown') {
        out.push({ ...base, action: 'skip', reason: 'Unknown: neither migrated nor stopped' });
        continue;
      }
      const req: PlacementRequest = { clusterUuid: host.clusterUuid, memorySize: vm.memorySize, cpuNum: vm.cpuNum, sourceHostUuid: hostUuid };
      const best = vm.state === 'Running' || vm.state === 'Paused' ? pickBest(snap.values(), req) : undefined;
      if (!best) {
        const reason = vm.state === 'Running' || vm.state === 'Paused' ? explainNoHost(allocate(snap.values(), req), req) : `${vmRef(vm)} cannot be migrated in that state`;
        out.push({ ...base, action: 'stop', reason });
        continue;
      }
      best.usedMemory += vm.memorySize;
      best.usedCpu += vm.cpuNum;
      best.vmCount++;
      out.push({ ...base, action: 'migrate', targetHostUuid: best.uuid, targetHostName: best.name });
    }
    return out;
  }
}
