/**
 * VM operations through the host's agent: create, start, stop (grace, then cold), reboot,
 * destroy and live migration. Orchestration only: the rules and the rows are
 * services/vms.ts, the allocator is pure, the agent calls go through agents/client.ts.
 *
 * One operation per VM at a time (a per-VM queue). While one runs, pushes from the agent
 * about that VM are not applied (the operation's own answer settles the row; a push sent
 * before the answer could otherwise land after it and undo it).
 *
 * Migration, and why it is never ambiguous. One transaction picks the destination, records
 * a MigrationRow (destination, one-time token, the capacity it reserves there) and marks the
 * VM Migrating. Then the destination agent is told the token (prepare) and the source agent
 * sends the VM there (migrate). Whatever happens next (an error, a timeout, a controller
 * crash), `settle()` decides from what the two agents report, never from what the
 * controller hoped:
 *
 *   destination has it (Running/Paused)       -> it lives there; a copy the source still holds
 *                                                 is destroyed there (resolve completed=true)
 *   source still sending it (Migrating)        -> wait and ask again
 *   source has it, destination not             -> it stays on the source (a paused half-sent
 *                                                 copy is resumed: resolve completed=false)
 *   neither has it                             -> Stopped, with its last host kept
 *   an agent does not answer                   -> nothing is decided; ask again later
 * The source agent never resumes a VM it has handed over (agent/migration.ts), so a VM is
 * never running on both.
 */
import { randomBytes } from 'node:crypto';
import { AGENT_PATHS, type AgentVm, type VmListRsp, type VmResolveMigrationRsp, type VmRsp } from '../../protocol/agent.ts';
import { HkError } from '../../protocol/errors.ts';
import type { HostRow, VmRow, VmState } from '../../protocol/resources.ts';
import { type MigrationRow, vmRef } from '../../protocol/vm.ts';
import { type Clock, sleep } from '../clock.ts';
import { type Seen, settleDecision } from './settle.ts';
import type { Logger } from '../log.ts';
import { KeyedQueue } from '../queue.ts';
import { type MetricsPort, noMetrics } from '../metrics.ts';
import { HostAgents } from '../agents/host-agents.ts';
import { AgentError } from '../agents/client.ts';
import { recompute, type Reservations } from '../services/capacity.ts';
import type { GlobalConfigs } from '../services/configs.ts';
import { hostRef } from '../services/inventory.ts';
import {
  applyAgentReport, checkHostRunsOps, checkTakesNewWork, checkVmOperation, insertVm, mustGetVm, type NewVm, place, setVm, settleMigration, stateFromAgent,
} from '../services/vms.ts';
import type { Repository } from '../store/repository.ts';

export interface VmOpsOptions {
  /** How long one agent VM call may take (create, start, stop...). */
  callTimeoutMs?: number;
  /** A live migration may take this long before it is settled by asking the agents. */
  migrateTimeoutMs?: number;
  /** A grace stop waits this long before the VM is powered off. */
  graceStopMs?: number;
  /** Settle: how often to ask the agents again while a migration is still in flight or unknown. */
  settlePollMs?: number;
  /** Settle gives up (leaves the migration recorded, the VM Migrating) after this long. */
  settleGiveUpMs?: number;
}

export interface CreateVmRequest extends NewVm {
  hostUuid?: string;
  clusterUuid?: string;
  zoneUuid?: string;
  strategy: 'InstantStart' | 'CreateStopped';
}

export const isAgentNotFound = (err: unknown) => err instanceof AgentError && err.kind === 'refused' && err.status === 404;

export class VmOps {
  readonly queue = new KeyedQueue();
  private readonly busySet = new Map<string, number>();
  private readonly o: Required<VmOpsOptions>;
  /** The metrics port (core.ts sets it): migrations' count, failures and duration. */
  metrics: Pick<MetricsPort, 'migration'> = noMetrics;

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly configs: GlobalConfigs,
    private readonly agents: HostAgents,
    private readonly reservations: Reservations,
    opts: VmOpsOptions = {},
  ) {
    this.o = {
      callTimeoutMs: 60_000, migrateTimeoutMs: 15 * 60_000, graceStopMs: 60_000, settlePollMs: 1_000, settleGiveUpMs: 10 * 60_000,
      ...opts,
    };
  }

  /** An operation on this VM is running: its pushes wait for the operation's own answer. */
  busy(vmUuid: string): boolean {
    return (this.busySet.get(vmUuid) ?? 0) > 0;
  }

  /**
   * A push about this VM came in: true when an operation on it runs (the push is not applied
   * then), and the VM is read again from its agent once the operation ends, so a change that
   * happened meanwhile (a guest that crashed right after a reboot) is not lost.
   */
  deferPush(vmUuid: string): boolean {
    if (!this.busy(vmUuid)) return false;
    this.pushedDuringOp.add(vmUuid);
    return true;
  }
  private readonly pushedDuringOp = new Set<string>();

  /** After an operation that saw a push: the row follows what the agent says now. */
  private async reread(vmUuid: string): Promise<void> {
    const vm = await this.repo.get<VmRow>('vm', vmUuid);
    const host = vm?.hostUuid ? await this.repo.get<HostRow>('host', vm.hostUuid) : undefined;
    if (!vm || !host || host.status !== 'Connected') return;
    const r = await this.call<VmListRsp>(host, AGENT_PATHS.vmList, {});
    const a = r.vms.find((v) => v.uuid === vmUuid);
    await this.repo.transaction(async (tx) => {
      const h = await tx.get<HostRow>('host', host.uuid);
      if (h) await applyAgentReport(tx, this.configs, this.clock.now(), h, a ? [a] : [], false, a ? [] : [vmUuid]);
    });
  }

  /** Runs `fn` as the VM's one operation at a time. */
  private exclusive<T>(vmUuid: string, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(vmUuid, async () => {
      this.busySet.set(vmUuid, (this.busySet.get(vmUuid) ?? 0) + 1);
      try {
        return await fn();
      } finally {
        const n = (this.busySet.get(vmUuid) ?? 1) - 1;
        if (n <= 0) this.busySet.delete(vmUuid);
        else this.busySet.set(vmUuid, n);
        if (n <= 0 && this.pushedDuringOp.delete(vmUuid)) {
          void this.reread(vmUuid).catch((err) => this.log.info({ vm: vmUuid, err: (err as Error).message }, 'could not read a VM again after its operation'));
        }
      }
    });
  }

  private async host(uuid: string | null): Promise<HostRow> {
    const h = uuid ? await this.repo.get<HostRow>('host', uuid) : undefined;
    if (!h) throw new HkError('SYS.1006', `host[uuid:${uuid}] of the VM does not exist`);
    return h;
  }

  private call<T extends { success: boolean }>(host: HostRow, path: string, body: unknown, timeoutMs = this.o.callTimeoutMs) {
    // Through the controller holding the host when that is not this one (controller/cluster/).
    return this.agents.callHost<T>(host, path, body, timeoutMs);
  }

  private agentVm(vm: VmRow): Omit<AgentVm, 'state'> {
    return { uuid: vm.uuid, name: vm.name, memorySize: vm.memorySize, cpuNum: vm.cpuNum, vmNics: vm.vmNics.map((n) => ({ ip: n.ip, mac: n.mac })) };
  }

  /** Records what an agent answered about a VM (its state on `host`). */
  private async record(vmUuid: string, host: HostRow, a: Pick<AgentVm, 'state'>): Promise<VmRow> {
    return this.repo.transaction((tx) => setVm(tx, this.configs, this.clock.now(), vmUuid, { state: stateFromAgent(a), hostUuid: host.uuid }));
  }

  /** An agent failure in an admin's words, as a job error. */
  private failed(vm: Pick<VmRow, 'uuid' | 'state' | 'name'>, op: string, host: HostRow, err: unknown): HkError {
    if (err instanceof HkError) return err;
    return new HkError('VM.1000', `${op} of ${vmRef(vm)} on ${hostRef(host)} failed: ${(err as Error).message}`);
  }

  // ---- create / start / stop / reboot / destroy ------------------------------------------

  /**
   * Places the VM (same transaction as its row, so concurrent creates never overcommit a
   * host) and returns it; `define()` then creates it on the host's agent.
   */
  async place(uuid: string, req: CreateVmRequest): Promise<VmRow> {
    const reserved = await this.reservations.resolver();
    return this.repo.transaction(async (tx) => {
      const scope = { hostUuid: req.hostUuid, clusterUuid: req.clusterUuid, zoneUuid: req.zoneUuid, memorySize: req.memorySize, cpuNum: req.cpuNum };
      if (req.hostUuid) {
        const h = await tx.get<HostRow>('host', req.hostUuid);
        if (!h) throw new HkError('SYS.1007', `params.hostUuid: host[uuid:${req.hostUuid}] does not exist`);
        checkTakesNewWork(h, `vm[name:${req.name}]`);
      }
      const host = await place(tx, this.configs, reserved, scope, `vm[name:${req.name}]`);
      return insertVm(tx, this.configs, this.clock.now(), uuid, req, host, req.strategy === 'CreateStopped' ? 'Created' : 'Starting');
    });
  }

  /** CreateVmInstance: place, then create it on the chosen host's agent. */
  async create(uuid: string, req: CreateVmRequest): Promise<VmRow> {
    return this.define(await this.place(uuid, req), req.strategy === 'InstantStart');
  }

  /** Creates a placed VM on its host's agent (started for InstantStart); removes the row when the agent refuses. */
  async define(vm: VmRow, start: boolean): Promise<VmRow> {
    return this.exclusive(vm.uuid, async () => {
      const host = await this.host(vm.hostUuid);
      try {
        const r = await this.call<VmRsp>(host, AGENT_PATHS.vmCreate, { vm: this.agentVm(vm), start });
        return await this.record(vm.uuid, host, r.vm);
      } catch (err) {
        // Leave nothing behind: the agent may have defined it before the error.
        await this.call(host, AGENT_PATHS.vmDestroy, { vmUuid: vm.uuid }).catch(() => undefined);
        await this.repo.transaction(async (tx) => {
          await setVm(tx, this.configs, this.clock.now(), vm.uuid, { state: 'Destroyed' });
          await tx.remove('vm', vm.uuid);
        });
        throw this.failed(vm, 'creating', host, err);
      }
    });
  }

  /** Checks that `op` may run now (state, host); throws the refusal naming the rule. */
  async check(vmUuid: string, op: 'start' | 'stop' | 'reboot' | 'migrate' | 'destroy'): Promise<{ vm: VmRow; host?: HostRow }> {
    const vm = await mustGetVm(this.repo, vmUuid);
    checkVmOperation(vm, op);
    // A stopped VM that vanished from its host starts where it last was (defined there anew).
    const hostUuid = vm.hostUuid ?? (op === 'start' ? vm.lastHostUuid : null);
    const host = hostUuid ? await this.repo.get<HostRow>('host', hostUuid) : undefined;
    if (op === 'destroy' && (!host || host.status !== 'Connected')) return { vm, host };
    if (!host) throw new HkError('SYS.1006', `${vmRef(vm)} has no host to ${op} it on`);
    checkHostRunsOps(host, vm, op);
    if (op === 'start') checkTakesNewWork(host, `${vmRef(vm)} to start`);
    return { vm, host };
  }

  async start(vmUuid: string): Promise<VmRow> {
    return this.exclusive(vmUuid, async () => {
      const { vm, host } = await this.check(vmUuid, 'start');
      // Starting holds capacity again: the allocator checks the VM still fits on its host.
      const reserved = await this.reservations.resolver();
      await this.repo.transaction(async (tx) => {
        await place(tx, this.configs, reserved, { hostUuid: host!.uuid, memorySize: vm.memorySize, cpuNum: vm.cpuNum }, vmRef(vm));
        await setVm(tx, this.configs, this.clock.now(), vmUuid, { state: 'Starting', hostUuid: host!.uuid });
      });
      try {
        let r: VmRsp;
        try {
          r = await this.call<VmRsp>(host!, AGENT_PATHS.vmStart, { vmUuid });
        } catch (err) {
          // Not defined there (created stopped and never defined, or lost with the host's disk): define and start.
          if (!isAgentNotFound(err)) throw err;
          r = await this.call<VmRsp>(host!, AGENT_PATHS.vmCreate, { vm: this.agentVm(vm), start: true });
        }
        return await this.record(vmUuid, host!, r.vm);
      } catch (err) {
        await this.resync(vmUuid, host!, vm.state);
        throw this.failed(vm, 'starting', host!, err);
      }
    });
  }

  /** Stop: `grace` asks the guest to shut down and powers it off after graceStopMs; `cold` powers off. */
  async stop(vmUuid: string, type: 'grace' | 'cold' = 'grace'): Promise<VmRow> {
    return this.exclusive(vmUuid, () => this.stopHeld(vmUuid, type, false));
  }

  /** Stop for a caller that holds the VM's queue; `evacuating` lets maintenance stop VMs of its own host. */
  private async stopHeld(vmUuid: string, type: 'grace' | 'cold', evacuating: boolean): Promise<VmRow> {
    const vm = await mustGetVm(this.repo, vmUuid);
    checkVmOperation(vm, 'stop');
    const host = await this.host(vm.hostUuid);
    if (!evacuating) checkHostRunsOps(host, vm, 'stop');
    await this.repo.transaction((tx) => setVm(tx, this.configs, this.clock.now(), vmUuid, { state: 'Stopping' }));
    try {
      let r: VmRsp | undefined;
      if (type === 'grace') {
        try {
          r = await this.call<VmRsp>(host, AGENT_PATHS.vmStop, { vmUuid, type: 'grace', graceTimeoutMs: this.o.graceStopMs }, this.o.graceStopMs + this.o.callTimeoutMs);
        } catch (err) {
          if (isAgentNotFound(err)) throw err;
          this.log.info({ vm: vmUuid, err: (err as Error).message }, 'grace stop did not finish: powering the VM off');
        }
      }
      r ??= await this.call<VmRsp>(host, AGENT_PATHS.vmStop, { vmUuid, type: 'cold' });
      return await this.record(vmUuid, host, r.vm);
    } catch (err) {
      if (isAgentNotFound(err)) {
        return this.repo.transaction((tx) => setVm(tx, this.configs, this.clock.now(), vmUuid, { state: 'Stopped' }));
      }
      await this.resync(vmUuid, host, vm.state);
      throw this.failed(vm, 'stopping', host, err);
    }
  }

  async reboot(vmUuid: string): Promise<VmRow> {
    return this.exclusive(vmUuid, async () => {
      const { vm, host } = await this.check(vmUuid, 'reboot');
      try {
        const r = await this.call<VmRsp>(host!, AGENT_PATHS.vmReboot, { vmUuid });
        return await this.record(vmUuid, host!, r.vm);
      } catch (err) {
        await this.resync(vmUuid, host!, vm.state);
        throw this.failed(vm, 'rebooting', host!, err);
      }
    });
  }

  /**
   * Destroys the VM on its host and removes its row. A VM whose host is gone or not
   * Connected is removed from the inventory only (the host may still run it: it is named in
   * the log, and the next connect's sync brings it back if it is still there).
   */
  async destroy(vmUuid: string): Promise<void> {
    await this.exclusive(vmUuid, async () => {
      const { vm, host } = await this.check(vmUuid, 'destroy');
      if (host && host.status === 'Connected') {
        try {
          await this.call(host, AGENT_PATHS.vmDestroy, { vmUuid });
        } catch (err) {
          if (!isAgentNotFound(err)) throw this.failed(vm, 'destroying', host, err);
        }
      } else if (host) {
        this.log.warn({ vm: vmUuid, host: host.uuid, status: host.status }, 'VM destroyed in the inventory only: its host is not Connected');
      }
      await this.repo.transaction(async (tx) => {
        await setVm(tx, this.configs, this.clock.now(), vmUuid, { state: 'Destroyed', hostUuid: null, lastHostUuid: vm.hostUuid });
        await tx.remove('vm', vmUuid);
      });
    });
  }

  /** After a failed operation: the row follows what the agent says now (or goes back to `was`). */
  private async resync(vmUuid: string, host: HostRow, was: VmState): Promise<void> {
    try {
      const r = await this.call<VmListRsp>(host, AGENT_PATHS.vmList, {});
      const a = r.vms.find((v) => v.uuid === vmUuid);
      await this.repo.transaction((tx) => setVm(tx, this.configs, this.clock.now(), vmUuid, { state: a ? stateFromAgent(a) : 'Stopped' }));
    } catch {
      await this.repo.transaction((tx) => setVm(tx, this.configs, this.clock.now(), vmUuid, { state: was })).catch(() => undefined);
    }
  }

  // ---- migration ---------------------------------------------------------------------------

  /**
   * Migrates a VM: to `targetHostUuid`, else to the host the allocator picks. `flowUuid` is
   * the flow that owns the migration (resume finds it by that). `evacuating`: the source is
   * in PreMaintenance and this is its evacuation. Resolves with the VM where it ended.
   */
  async migrate(vmUuid: string, opts: { targetHostUuid?: string; flowUuid: string; evacuating?: boolean; onStart?: (target: HostRow) => void; fromHostUuid?: string }): Promise<VmRow> {
    return this.exclusive(vmUuid, async () => {
      const m = await this.reserve(vmUuid, opts);
      const target = await this.repo.get<HostRow>('host', m.targetHostUuid);
      if (target) opts.onStart?.(target);
      // A duration for the metrics only (not a timer): the injected clock decides nothing here.
      const t0 = performance.now();
      try {
        const out = await this.transfer(m);
        this.metrics.migration(true, (performance.now() - t0) / 1000);
        return out;
      } catch (err) {
        this.metrics.migration(false, (performance.now() - t0) / 1000);
        throw err;
      }
    });
  }

  /** Picks the destination and records the migration, the reservation and Migrating at once. */
  private async reserve(vmUuid: string, opts: { targetHostUuid?: string; flowUuid: string; evacuating?: boolean; fromHostUuid?: string }): Promise<MigrationRow> {
    const reserved = await this.reservations.resolver();
    return this.repo.transaction(async (tx) => {
      const vm = await mustGetVm(tx, vmUuid);
      // Asked to move it off one host, and another request moved it meanwhile: not twice.
      if (opts.fromHostUuid && vm.hostUuid !== opts.fromHostUuid) {
        throw new HkError('SYS.1006', `${vmRef(vm)} is no longer on host[uuid:${opts.fromHostUuid}] (it was moved meanwhile)`);
      }
      checkVmOperation(vm, 'migrate');
      const source = await tx.get<HostRow>('host', vm.hostUuid ?? '');
      if (!source) throw new HkError('SYS.1006', `${vmRef(vm)} has no host to migrate it from`);
      if (!(opts.evacuating && source.state === 'PreMaintenance')) checkHostRunsOps(source, vm, 'migrate');
      else if (source.status !== 'Connected') throw new HkError('HOST.1010', `${vmRef(vm)} cannot migrate: its ${hostRef(source)} is ${source.status}`);
      if (opts.targetHostUuid) {
        const t = await tx.get<HostRow>('host', opts.targetHostUuid);
        if (!t) throw new HkError('SYS.1007', `hostUuid: host[uuid:${opts.targetHostUuid}] does not exist`);
        if (t.uuid === source.uuid) throw new HkError('SYS.1007', `hostUuid: ${vmRef(vm)} is already on ${hostRef(t)}`);
        checkTakesNewWork(t, `${vmRef(vm)} migrating in`);
      }
      const target = await place(tx, this.configs, reserved, {
        hostUuid: opts.targetHostUuid, clusterUuid: opts.targetHostUuid ? undefined : vm.clusterUuid ?? undefined,
        memorySize: vm.memorySize, cpuNum: vm.cpuNum, sourceHostUuid: source.uuid,
      }, vmRef(vm));
      const now = this.clock.now();
      const m: MigrationRow = {
        uuid: vm.uuid, sourceHostUuid: source.uuid, targetHostUuid: target.uuid, token: randomBytes(16).toString('hex'),
        memorySize: vm.memorySize, cpuNum: vm.cpuNum, flowUuid: opts.flowUuid, createDate: now,
      };
      await tx.insert<MigrationRow>('migration', m);
      await setVm(tx, this.configs, now, vm.uuid, { state: 'Migrating', stateBeforeMigration: vm.state });
      // The reservation on the destination, in this transaction: a concurrent placement sees it.
      await recompute(tx, target.uuid, this.configs);
      return m;
    });
  }

  /** Prepare on the destination, send from the source, then settle from what the agents report. */
  private async transfer(m: MigrationRow): Promise<VmRow> {
    let failure: unknown;
    let source: HostRow | undefined;
    let target: HostRow | undefined;
    try {
      // Everything after the reservation is inside the try: whatever fails, settle() decides.
      [source, target] = [await this.host(m.sourceHostUuid), await this.host(m.targetHostUuid)];
      const vm = (await this.repo.get<VmRow>('vm', m.uuid))!;
      const was = vm.stateBeforeMigration === 'Paused' ? 'Paused' : 'Running';
      await this.call(target, AGENT_PATHS.vmPrepareMigration, { vm: { ...this.agentVm(vm), state: was }, token: m.token });
      // Agents speak only TLS; the source presents its own certificate from our CA.
      const destinationUrl = `https://${urlHost(target.managementIp)}:${target.agentPort ?? 7070}`;
      await this.call<VmRsp>(source, AGENT_PATHS.vmMigrate, { vmUuid: m.uuid, destinationUrl, token: m.token }, this.o.migrateTimeoutMs);
      // The source answers 200 only once the destination confirmed it has the VM and the
      // source forgot it: nothing to ask.
      return await this.repo.transaction(async (tx) => (await settleMigration(tx, this.configs, this.clock.now(), m, { hostUuid: m.targetHostUuid, state: was }))!);
    } catch (err) {
      failure = err;
      this.log.warn({ vm: m.uuid, from: m.sourceHostUuid, to: m.targetHostUuid, err: (err as Error).message }, 'migration failed; asking both hosts where the VM is');
    }
    const after = await this.settle(m);
    if (after?.hostUuid === m.targetHostUuid) return after;
    const from = source ? hostRef(source) : `host[uuid:${m.sourceHostUuid}]`;
    const to = target ? hostRef(target) : `host[uuid:${m.targetHostUuid}]`;
    throw new HkError('VM.1000', `migration of vm[uuid:${m.uuid}] from ${from} to ${to} failed${failure ? `: ${(failure as Error).message}` : ''}; the VM ${after ? `is ${after.state} on ${after.hostUuid === m.sourceHostUuid ? 'its source host' : `host[uuid:${after.hostUuid}]`}` : 'is gone'}`);
  }

  /**
   * Settles a recorded migration from what both agents report (see the table at the top).
   * Retries while the answer is "still in flight" or an agent does not answer, up to
   * settleGiveUpMs; then the migration stays recorded (the VM Migrating) and an error says so.
   */
  async settle(m: MigrationRow, signal?: AbortSignal): Promise<VmRow | undefined> {
    const deadline = this.clock.now() + this.o.settleGiveUpMs;
    for (;;) {
      // An answer that cannot be had (an agent call failing mid-way) is a reason to ask again.
      const decision = await this.ask(m).catch((err): { kind: 'wait'; why: string } => ({ kind: 'wait', why: (err as Error).message }));
      if (decision.kind === 'decided') {
        return this.repo.transaction((tx) => settleMigration(tx, this.configs, this.clock.now(), m, decision.where));
      }
      if (this.clock.now() >= deadline) {
        throw new HkError('VM.1000', `cannot tell where vm[uuid:${m.uuid}] is after its migration from host[uuid:${m.sourceHostUuid}] to host[uuid:${m.targetHostUuid}]: ${decision.why}; it stays Migrating until both hosts answer`);
      }
      await sleep(this.clock, this.o.settlePollMs, signal);
    }
  }

  /** One look at both ends of a migration; resolves a half-done source copy when the answer is clear. */
  private async ask(m: MigrationRow): Promise<{ kind: 'decided'; where: { hostUuid: string; state: VmState } | null } | { kind: 'wait'; why: string }> {
    const source = await this.repo.get<HostRow>('host', m.sourceHostUuid);
    const target = await this.repo.get<HostRow>('host', m.targetHostUuid);
    // A host deleted meanwhile holds nothing.
    const look = async (h: HostRow | undefined): Promise<Seen> => {
      if (!h) return null;
      try {
        const r = await this.call<VmListRsp>(h, AGENT_PATHS.vmList, {});
        return r.vms.find((v) => v.uuid === m.uuid) ?? null;
      } catch {
        return 'no-answer';
      }
    };
    const [s, t] = await Promise.all([look(source), look(target)]);
    const d = settleDecision(s, t);
    if (d.kind === 'wait') return d;
    if (d.on === 'nowhere') return { kind: 'decided', where: null };
    let vm = d.vm!;
    if (d.resolveSource !== undefined) {
      const r = await this.call<VmResolveMigrationRsp>(source!, AGENT_PATHS.vmResolveMigration, { vmUuid: m.uuid, completed: d.resolveSource });
      if (d.on === 'source' && r.vm) vm = r.vm;
    }
    return { kind: 'decided', where: { hostUuid: d.on === 'source' ? m.sourceHostUuid : m.targetHostUuid, state: stateFromAgent(vm) } };
  }

  /**
   * Migrations whose flow is gone or finished (a settle gave up, say): settled again, so no VM
   * stays Migrating and no reservation stays held. Run at start and on the housekeeping timer.
   */
  async settleOrphans(isLive: (flowUuid: string) => Promise<boolean>): Promise<number> {
    let n = 0;
    for (const m of await this.repo.all<MigrationRow>('migration')) {
      if (this.busy(m.uuid) || (await isLive(m.flowUuid))) continue;
      n++;
      await this.resumeMigration(m).catch((err) => this.log.warn({ vm: m.uuid, err: (err as Error).message }, 'an orphaned migration is still unsettled'));
    }
    return n;
  }

  /** Migrations recorded by a flow (resume). */
  async migrationsOf(flowUuid: string): Promise<MigrationRow[]> {
    return (await this.repo.all<MigrationRow>('migration')).filter((m) => m.flowUuid === flowUuid);
  }

  /** Settles a migration found at start-up, inside the VM's queue. */
  async resumeMigration(m: MigrationRow, signal?: AbortSignal): Promise<VmRow | undefined> {
    return this.exclusive(m.uuid, () => this.settle(m, signal));
  }

  /** Stop within an evacuation (the host is PreMaintenance); holds the VM's queue. */
  async stopForEvacuation(vmUuid: string, type: 'grace' | 'cold'): Promise<VmRow> {
    return this.exclusive(vmUuid, () => this.stopHeld(vmUuid, type, true));
  }
}

/** An IPv6 literal needs brackets in a URL. */
export const urlHost = (ip: string) => (ip.includes(':') ? `[${ip}]` : ip);
