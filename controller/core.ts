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
import { Jobs, sweepExpired } from './services/jobs.ts';
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
}

export async function openCore(opts: CoreOptions): Promise<Core> {
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? createLogger();
  const repo = await EmbeddedStore.open(opts.dataDir, { sync: opts.sync ?? true });
  try {
    const configs = await GlobalConfigs.load(repo, log);
    const jobs = new Jobs(repo, clock, log);
    await jobs.start();
    const auth = new Auth(repo, clock);
    jobs.onSweep(() => auth.sweep());
    jobs.onSweep(() => sweepExpired(repo, 'bootstrapToken', clock.now()));
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
    const hosts = new Hosts(repo, clock, log);
    const agents = new HostAgents(repo, clock, log, configs, hosts, opts.agents);
    const key = await loadOrCreateKey(opts.dataDir);
    const deployer = new Deployer(repo, clock, log, hosts, agents, key, {
      hypervisor: 'libvirt', advertiseUrl: opts.agents?.advertiseUrl, ...opts.deploy, dataDir: opts.dataDir,
    });
    return {
      repo, clock, log, configs, jobs, auth, hosts, agents, deployer,
      async close() {
        jobs.stop();
        await deployer.stop();
        await agents.stop();
        await jobs.drain();
        await repo.close();
      },
    };
  } catch (err) {
    await repo.close();
    throw err;
  }
}
