/**
 * The controller's parts, wired once. The HTTP layer (api/app.ts), the CLI-facing server
 * (server.ts) and tests all start from here.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HostAgents, type HostAgentsOptions } from './agents/host-agents.ts';
import { type Clock, systemClock } from './clock.ts';
import { Deployer, type DeployerOptions } from './deploy/deployer.ts';
import { loadOrCreateKey } from './deploy/keys.ts';
import { createLogger, type Logger } from './log.ts';
import { Auth } from './services/auth.ts';
import { GlobalConfigs } from './services/configs.ts';
import { Hosts } from './services/hosts.ts';
import { JOB_TTL_MS, Jobs, sweepExpired } from './services/jobs.ts';
import { HostOps } from './flows/host-ops.ts';
import { Reservations } from './services/capacity.ts';
import { Maintenance } from './flows/maintenance.ts';
import { defineMigrateVm } from './flows/migrate-vm.ts';
import { FlowRunner } from './flows/runner.ts';
import { VmOps, type VmOpsOptions } from './flows/vm-ops.ts';
import { EmbeddedStore } from './store/embedded-store.ts';
import type { Repository } from './store/repository.ts';

export interface Core {
  repo: Repository;
  clock: Clock;
  log: Logger;
  configs: GlobalConfigs;
  jobs: Jobs;
  auth: Auth;
  hosts: Hosts;
  agents: HostAgents;
  deployer: Deployer;
  runner: FlowRunner;
  vmOps: VmOps;
  maintenance: Maintenance;
  hostOps: HostOps;
  /** Reserved memory per host, cached for the allocator (invalidated when a tag changes). */
  reservations: Reservations;
  close(): Promise<void>;
}

export interface CoreOptions {
  dataDir: string;
  /** Used when the store is first created; otherwise one is generated and written to the data dir. */
  adminPassword?: string;
  clock?: Clock;
  log?: Logger;
  /** Only for throwaway stores in tests: skip fdatasync. */
  sync?: boolean;
  /** Where a generated admin password is announced (default: stdout). */
  announce?: (line: string) => void;
  agents?: HostAgentsOptions;
  /** Agent deployment over SSH (AddKVMHost); dataDir and advertiseUrl come from above. */
  deploy?: Partial<Omit<DeployerOptions, 'dataDir'>>;
  /** VM operation timeouts (tests shorten them). */
  vms?: VmOpsOptions;
}

export async function openCore(opts: CoreOptions): Promise<Core> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createLogger();
  const repo = await EmbeddedStore.open(opts.dataDir, { sync: opts.sync ?? true, log });
  try {
    const configs = await GlobalConfigs.load(repo, log);
    const jobs = new Jobs(repo, clock, log);
    const runner = new FlowRunner(repo, clock, log, jobs);
    const auth = new Auth(repo, clock);
    const hosts = new Hosts(repo, clock, log);
    const agents = new HostAgents(repo, clock, log, configs, hosts, opts.agents);
    const reservations = new Reservations(repo, configs);
    const vmOps = new VmOps(repo, clock, log, configs, agents, reservations, opts.vms);
    agents.vmBusy = (vmUuid) => vmOps.busy(vmUuid);
    const maintenance = new Maintenance(repo, log, configs, hosts, vmOps, runner, reservations);
    defineMigrateVm(runner, repo, vmOps);
    // Jobs that a flow finishes after the restart stay Running; the others were cut.
    const resumable = await runner.resumableJobs();
    await jobs.start((j) => resumable.has(j.uuid));
    jobs.onSweep(() => auth.sweep());
    jobs.onSweep(() => sweepExpired(repo, 'bootstrapToken', clock.now()));
    jobs.onSweep(() => runner.sweep(JOB_TTL_MS));
    if (!(await auth.adminExists())) {
      let password = opts.adminPassword;
      if (!password) {
        password = randomBytes(18).toString('base64url');
        const file = join(opts.dataDir, 'admin-password');
        await writeFile(file, `${password}\n`, { mode: 0o600 });
        (opts.announce ?? ((l) => process.stdout.write(`${l}\n`)))(
          `Generated the admin password (shown once, also in ${file}, mode 0600): ${password}`,
        );
      }
      await auth.ensureAdmin(password);
      log.info({ account: 'admin' }, 'created the admin account');
    }
    const key = await loadOrCreateKey(opts.dataDir);
    const deployer = new Deployer(repo, clock, log, hosts, agents, key, {
      hypervisor: 'libvirt', advertiseUrl: opts.agents?.advertiseUrl, ...opts.deploy, dataDir: opts.dataDir,
    });
    const core: Core = {
      repo, clock, log, configs, jobs, auth, hosts, agents, deployer, runner, vmOps, maintenance, reservations,
      hostOps: undefined as unknown as HostOps,
      async close() {
        jobs.stop();
        // Flows stop at a safe point and stay Running: the next start resumes them.
        await runner.stop();
        await deployer.stop();
        await agents.stop();
        await jobs.drain();
        await repo.close();
      },
    };
    core.hostOps = new HostOps(core);
    return core;
  } catch (err) {
    await repo.close();
    throw err;
  }
}
