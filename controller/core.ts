/**
 * The controller's parts, wired once. The HTTP layer (api/app.ts), the CLI-facing server
 * (server.ts) and tests all start from here.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { HostAgents, type HostAgentsOptions } from './agents/host-agents.ts';
import { Cluster, type ClusterOptions, memberUuid } from './cluster/cluster.ts';
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
import { MaintenanceWindows } from './flows/maintenance-windows.ts';
import { defineMigrateVm } from './flows/migrate-vm.ts';
import { FlowRunner } from './flows/runner.ts';
import { VmOps, type VmOpsOptions } from './flows/vm-ops.ts';
import { openStore } from './store/open.ts';
import type { Repository } from './store/repository.ts';
import { EventLog, withCommitHooks } from './events.ts';
import { type MetricsPort, PromMetrics } from './metrics.ts';
import { Pki } from './pki/ca.ts';
import { openControllerFence } from './pki/replay-fence.ts';
import type { ReplayFence } from '../protocol/replay-fence.ts';

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
  /** The name resolver AddKVMHost uses (CoreOptions.lookup; default the system's). */
  lookup?: (name: string) => Promise<unknown>;
  windows: MaintenanceWindows;
  /** Reserved memory per host, cached for the allocator (invalidated when a tag changes). */
  reservations: Reservations;
  /** Domain events: the bounded log and its live listeners (controller/events.ts). */
  events: EventLog;
  /** The metrics port; a PromMetrics unless the caller passed another (controller/metrics.ts). */
  metrics: MetricsPort;
  /** The CA and the controller's TLS identity (controller/pki/ca.ts). */
  pki: Pki;
  /** Refuses agent pushes signed before this process started (controller/pki/replay-fence.ts). */
  agentFence: ReplayFence;
  /** The TLS port agents use (HOSTKEEPER_AGENT_PORT), set by server.ts once it listens. */
  agentPort: number;
  /** Membership and host leases (controller/cluster/): one member on the embedded store. */
  cluster: Cluster;
  close(): Promise<void>;
}

export interface CoreOptions {
  dataDir: string;
  /** Used when the store is first created; otherwise one is generated and written to the data dir. */
  adminPassword?: string;
  clock?: Clock;
  log?: Logger;
  /** postgres://...: the PostgreSQL store (HOSTKEEPER_DATABASE_URL); unset: the embedded store in dataDir. */
  databaseUrl?: string;
  /** Only for throwaway stores in tests: skip fdatasync. */
  sync?: boolean;
  /** Where a generated admin password is announced (default: stdout). */
  announce?: (line: string) => void;
  agents?: HostAgentsOptions;
  /** Agent deployment over SSH (AddKVMHost); dataDir and advertiseUrl come from above. */
  deploy?: Partial<Omit<DeployerOptions, 'dataDir'>>;
  /** How names are resolved (AddKVMHost's managementIp); tests pass a fake that reaches no DNS server. */
  lookup?: (name: string) => Promise<unknown>;
  /** VM operation timeouts (tests shorten them). */
  vms?: VmOpsOptions;
  /** Default: a PromMetrics of its own (served at /metrics). */
  metrics?: MetricsPort;
  /** Event log bounds (default 10,000 rows). */
  eventLogCap?: number;
  /** Cluster timings (tests shorten them); the member uuid comes from the data dir. */
  cluster?: Omit<ClusterOptions, 'uuid'>;
}

export async function openCore(opts: CoreOptions): Promise<Core> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createLogger();
  let timing: MetricsPort | undefined;
  const events = new EventLog(clock, log, { cap: opts.eventLogCap });
  // Events are emitted after commit and transactions timed through this one hook.
  const repo = withCommitHooks(await openStore({ dataDir: opts.dataDir, databaseUrl: opts.databaseUrl, sync: opts.sync, log }), {
    events, transactionSeconds: (s, ok) => timing?.transaction(s, ok),
  });
  try {
    // The member uuid (kept in the data dir) names this controller in the cluster and in the
    // `controller` label of its work metrics (several controllers may share a hostname).
    const member = await memberUuid(opts.dataDir);
    const metrics = opts.metrics ?? new PromMetrics({ controller: `${hostname()}-${member.slice(0, 8)}` });
    timing = metrics;
    const configs = await GlobalConfigs.load(repo, log);
    await events.start(repo);
    const cluster = new Cluster(repo, clock, log, { ...opts.cluster, uuid: member });
    const jobs = new Jobs(repo, clock, log);
    jobs.member = member;
    jobs.onFinish((j, err) => {
      metrics.job(j.apiName, j.status === 'Failed' ? 'Failed' : 'Succeeded', (j.lastOpDate - j.createDate) / 1000);
      const refusals = (err as { refusals?: Record<string, number> } | undefined)?.refusals;
      if (refusals) metrics.allocatorRefusal(refusals);
    });
    const runner = new FlowRunner(repo, clock, log, jobs, cluster);
    const auth = new Auth(repo, clock);
    const hosts = new Hosts(repo, clock, log);
    const pki = await Pki.open(repo, log);
    const agentFence = await openControllerFence(repo, clock);
    // Calls to agents are TLS with our identity; `agents.tls: null` (bench/ only) keeps plain HTTP.
    const agents = new HostAgents(repo, clock, log, configs, hosts, { tls: pki, cluster, ...opts.agents });
    // A member died: its unfinished flows are resumed here (those the ring gives us) and its
    // other Running jobs are failed (they ran in its memory).
    // Flows a lost database cut in this process (their steps failed on the store) go on.
    agents.onReattached = () => {
      void runner.resumeAll().catch((err) => log.warn({ err: (err as Error).message }, 'could not resume flows after the database came back'));
    };
    agents.onMembersDied = (dead) => {
      // Its AddKVMHost cut before the key was installed cannot go on; after, it is resumed here.
      void core.deployer.dropInterruptedLogins().then(() => core.deployer.resumeDeployments())
        .catch((err) => log.warn({ dead, err: (err as Error).message }, 'could not take over the deployments of a stopped controller'));
      void runner.claimOrphans()
        .then(() => runner.resumableJobs())
        .then((resumable) => jobs.failOrphans((m) => cluster.isLive(m), (j) => resumable.has(j.uuid)))
        .catch((err) => log.warn({ dead, err: (err as Error).message }, 'could not take over the work of a stopped controller'));
    };
    const reservations = new Reservations(repo, configs);
    const vmOps = new VmOps(repo, clock, log, configs, agents, reservations, opts.vms);
    agents.vmBusy = (vmUuid) => vmOps.deferPush(vmUuid);
    agents.metrics = metrics;
    vmOps.metrics = metrics;
    const maintenance = new Maintenance(repo, log, configs, hosts, vmOps, runner, reservations);
    defineMigrateVm(runner, repo, vmOps);
    // Jobs that a flow finishes after the restart stay Running; the others were cut.
    const resumable = await runner.resumableJobs();
    await jobs.start((j) => resumable.has(j.uuid));
    jobs.onSweep(() => auth.sweep());
    jobs.onSweep(() => sweepExpired(repo, 'bootstrapToken', clock.now()));
    jobs.onSweep(() => runner.sweep(JOB_TTL_MS));
    // A migration whose flow ended without settling it (an agent silent for long) is asked again.
    jobs.onSweep(() => vmOps.settleOrphans((f) => runner.isLive(f)));
    jobs.onSweep(() => pki.renewIfDue());
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
    // In the store, so that every controller on one database reaches every host.
    const key = await loadOrCreateKey(opts.dataDir, repo);
    const deployer = new Deployer(repo, clock, log, hosts, agents, key, {
      hypervisor: 'libvirt', advertiseUrl: opts.agents?.advertiseUrl, ...opts.deploy, dataDir: opts.dataDir,
    });
    deployer.members = cluster;
    const core: Core = {
      repo, clock, log, configs, jobs, auth, hosts, agents, deployer, runner, vmOps, maintenance, reservations, events, metrics,
      pki, agentFence, agentPort: 0, lookup: opts.lookup, cluster,
      hostOps: undefined as unknown as HostOps,
      windows: undefined as unknown as MaintenanceWindows,
      async close() {
        jobs.stop();
        await cluster.stop();
        // Flows stop at a safe point and stay Running: the next start resumes them.
        await core.windows.stop();
        reservations.close();
        configs.close();
        await runner.stop();
        await deployer.stop();
        await agents.stop();
        pki.stop();
        await jobs.drain();
        events.stop();
        await events.settle();
        await repo.close();
      },
    };
    core.hostOps = new HostOps(core);
    core.windows = new MaintenanceWindows(repo, clock, log, hosts, maintenance, () => core.hostOps);
    await core.windows.start();
    return core;
  } catch (err) {
    await repo.close();
    throw err;
  }
}
