/**
 * AddKVMHost end to end: SSH with the password once (host key recorded, root checked, the
 * controller's key installed), the bundled playbook (ansible/) installs and starts the
 * agent, then the connect flow. Every step is named, reports progress, and a failure says
 * which step failed and why; the host record is then removed (or kept Disconnected when the
 * admin asked with the `keepHostOnFailure` system tag).
 *
 * Reconnect redeploys only when what is on the host differs from what this controller would
 * deploy (the agent bundle's and config's sha256, and whether the agent runs), checked over
 * SSH with the key. DeleteHost stops the agent when the host can be reached.
 *
 * Deployment state lives on the host row (deployPhase): a controller restart mid-way removes
 * a host that never got the key (the password is gone) and resumes one that did.
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { AGENT_PORT, sha256hex } from '../../protocol/agent.ts';
import { HkError } from '../../protocol/errors.ts';
import type { HostRow } from '../../protocol/resources.ts';
import type { HostAgents } from '../agents/host-agents.ts';
import type { Clock } from '../clock.ts';
import { runFlow, type Step } from '../flow.ts';
import type { Logger } from '../log.ts';
import type { Hosts } from '../services/hosts.ts';
import { deleteHost } from '../services/inventory.ts';
import type { JobHandle } from '../services/jobs.ts';
import type { Repository } from '../store/repository.ts';
import type { ControllerKey } from './keys.ts';
import { clusterMigrationKey } from './migration-keys.ts';
import { type PlaybookHost, type PlaybookOutcome, PlaybookRunner } from './ansible.ts';
import { shCommand, SshError, SshSession, type SshTarget } from './ssh.ts';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '../..');
export const ANSIBLE_DIR = join(ROOT, 'ansible');

/** Where the playbook puts things on a host (ansible/README.md). */
export const REMOTE = {
  bundle: '/opt/hostkeeper/agent/hostkeeper-agent.mjs',
  config: '/etc/hostkeeper/agent.json',
  ctl: '/opt/hostkeeper/bin/hostkeeper-agentctl',
  /** The agent's own copy of its identity (agent/state.ts). */
  stateCopy: '/var/lib/hostkeeper-agent/agent.json',
  /** The KVM stack's control script and the cluster's migration key (ansible/roles/kvm). */
  kvmctl: '/opt/hostkeeper/bin/hostkeeper-kvmctl',
  migrationKey: '/etc/hostkeeper/migration/id_ed25519',
};

export const KEEP_ON_FAILURE_TAG = 'keepHostOnFailure';

export interface DeployerOptions {
  dataDir: string;
  /** libvirt on real hosts; simulator for demos and tests (HOSTKEEPER_DEPLOY_HYPERVISOR). */
  hypervisor: 'libvirt' | 'simulator';
  agentPort?: number;
  /** HOSTKEEPER_ADVERTISE_URL; else the address the SSH connection left from + the API port. */
  advertiseUrl?: string;
  sshTimeoutMs?: number;
  playbookTimeoutMs?: number;
  batchWindowMs?: number;
  /** Test seam: a prebuilt bundle instead of building one. */
  bundlePath?: string;
  /** Test seam: how SSH sessions are opened (default: ssh2). */
  sshOpen?: (t: SshTarget) => Promise<SshLike>;
  /** Test seam: how the playbook is run (default: ansible-playbook via PlaybookRunner). */
  playbook?: (host: PlaybookHost, onTask?: (task: string) => void) => Promise<PlaybookOutcome>;
}

/** What the deployer uses of an SSH session (SshSession; tests pass fakes). */
export type SshLike = Pick<SshSession, 'hostKey' | 'localAddress' | 'exec' | 'checkRoot' | 'installKey' | 'close'>;

export interface Credentials {
  username: string;
  password: string;
}

/** What a deployment writes to the host: the exact bytes of the agent's config. */
export function agentConfig(h: { uuid: string; agentSecret: string }, controllerUrl: string, port: number, hypervisor: string): string {
  return `${JSON.stringify({ hostUuid: h.uuid, secret: h.agentSecret, controllerUrl, listen: `0.0.0.0:${port}`, hypervisor }, null, 2)}\n`;
}


export class Deployer {
  readonly runner: PlaybookRunner;
  private bundle?: Promise<{ path: string; sha: string }>;
  private listenPort = 0;
  private readonly active = new Set<string>();
  /**
   * Several controllers (core sets it): whose deployments this controller may drop or resume
   * (its own, those from before deployBy existed, and those of members that are not live).
   */
  members?: { uuid: string; readonly started: boolean; isLive(member: string): boolean };

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly hosts: Hosts,
    private readonly agents: HostAgents,
    private readonly key: ControllerKey,
    private readonly opts: DeployerOptions,
  ) {
    this.runner = new PlaybookRunner({
      ansibleDir: ANSIBLE_DIR, privateKeyPath: key.privateKeyPath, workDir: join(opts.dataDir, 'ansible'), log,
      batchWindowMs: opts.batchWindowMs, timeoutMs: opts.playbookTimeoutMs,
    });
  }

  setListenPort(port: number): void {
    this.listenPort = port;
  }

  /** Job progress, best effort: a failed progress write must not become an unhandled rejection. */
  private report(job: JobHandle | undefined, p: Parameters<JobHandle['progress']>[0]): void {
    job?.progress(p).catch((err) => this.log.warn({ job: job.uuid, err: (err as Error).message }, 'could not record job progress'));
  }

  get agentPort(): number {
    return this.opts.agentPort ?? AGENT_PORT;
  }

  /** The agent as one file, built once per controller process (the same source gives the same bytes). */
  agentBundle(): Promise<{ path: string; sha: string }> {
    this.bundle ??= (async () => {
      let path = this.opts.bundlePath;
      if (!path) {
        const out = join(this.opts.dataDir, 'agent');
        await buildBundle(out);
        path = join(out, 'hostkeeper-agent.mjs');
      }
      return { path, sha: sha256hex(await readFile(path)) };
    })();
    this.bundle.catch(() => { this.bundle = undefined; });
    return this.bundle;
  }

  /**
   * Deploys and connects a host just recorded by AddKVMHost (status Connecting, deployPhase
   * 'login'). Runs in the host's queue. On failure the host is removed or kept Disconnected.
   */
  async add(uuid: string, creds: Credentials, keep: boolean, job?: JobHandle): Promise<HostRow> {
    return this.hosts.queue.run(uuid, async () => {
      this.active.add(uuid);
      const timing: Record<string, number> = {};
      try {
        const host = await this.hosts.mustGet(uuid);
        const ctx: { ssh?: SshLike; become?: boolean; keyInstalled?: boolean } = {};
        let current = '';
        const onStep = (i: number, total: number, step: string) => {
          current = step;
          this.report(job, { current: i, total, step });
        };
        const timed = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
          const t0 = Date.now();
          try {
            return await fn();
          } finally {
            timing[name] = (Date.now() - t0) / 1000;
          }
        };
        const steps: Step<typeof ctx>[] = [
          {
            name: 'ssh-login',
            run: () => timed('ssh', async () => {
              ctx.ssh = await this.sshOpen({
                host: host.managementIp, port: host.sshPort, username: creds.username, password: creds.password, timeoutMs: this.opts.sshTimeoutMs,
              });
              await this.repo.transaction((tx) => tx.update<HostRow>('host', uuid, { sshHostKey: ctx.ssh!.hostKey, sshUser: creds.username }));
            }),
            rollback: async () => ctx.ssh?.close(),
          },
          {
            name: 'check-root',
            run: async () => {
              ctx.become = (await ctx.ssh!.checkRoot()).become;
            },
          },
          {
            name: 'install-key',
            run: () => timed('ssh', async () => {
              await ctx.ssh!.installKey(this.key.publicKey);
              const controllerUrl = this.controllerUrl(ctx.ssh!.localAddress);
              ctx.ssh!.close();
              ctx.keyInstalled = true;
              // From here on the key is the credential: a restart can resume.
              await this.repo.transaction((tx) => tx.update<HostRow>('host', uuid, { sshBecome: ctx.become, deployPhase: 'deploying', controllerUrl, keepOnFailure: keep }));
            }),
          },
          {
            name: 'deploy-agent',
            run: () => timed('playbook', async () => {
              const o = await this.playbook(await this.hosts.mustGet(uuid), (task) => this.report(job, { current: 4, total: steps.length, step: 'deploy-agent', message: task }));
              if (!o.ok) throw new Error(playbookError(o));
            }),
          },
          {
            name: 'connect',
            run: () => timed('connect', async () => {
              await this.agents.connectHeld(uuid);
              await this.repo.transaction((tx) => tx.update<HostRow>('host', uuid, { deployPhase: 'done' }));
            }),
          },
        ];
        try {
          await runFlow(`add-host-${uuid}`, steps, ctx, this.log, onStep);
        } catch (err) {
          const why = err instanceof HkError ? err.details : (err as Error).message;
          const now = await this.repo.get<HostRow>('host', uuid);
          if (now && ctx.keyInstalled && !keep) {
            // Whatever the playbook got to start must not run on as an orphan with a live secret.
            await this.stopAgent(now).catch(() => undefined);
          }
          await this.giveUp(uuid, keep, `adding the host failed at step ${current}: ${why}`);
          throw new HkError('HOST.1000', `unable to add host[uuid:${uuid}, ip:${host.managementIp}]: step ${current} failed: ${why}`);
        }
        this.log.info({ host: uuid, managementIp: host.managementIp, seconds: timing }, 'host added and connected');
        return this.hosts.mustGet(uuid);
      } finally {
        this.active.delete(uuid);
      }
    });
  }

  /** The deploy failed: remove the record, or keep it Disconnected with the reason. */
  private async giveUp(uuid: string, keep: boolean, reason: string): Promise<void> {
    this.agents.forgetHost(uuid);
    await this.repo.transaction(async (tx) => {
      if (!(await tx.get('host', uuid))) return;
      if (keep) {
        await this.hosts.applyStatusEvent(tx, uuid, 'disconnected', reason);
        const h = await tx.get<HostRow>('host', uuid);
        // Without the key on the host nothing more can be done from here (the password is
        // gone): the record stays for the admin, with no credentials. With the key, a
        // ReconnectHost redeploys.
        if (h?.deployPhase === 'login') await tx.update<HostRow>('host', uuid, { deployPhase: undefined, agentSecret: null });
      } else {
        await deleteHost(tx, this.clock.now(), uuid, 'Enforcing');
      }
    });
    this.log.warn({ host: uuid, kept: keep, reason }, keep ? 'host kept Disconnected after a failed add' : 'host removed after a failed add');
  }

  private controllerUrl(localAddress: string): string {
    const host = localAddress.includes(':') ? `[${localAddress}]` : localAddress;
    return this.opts.advertiseUrl ?? `http://${host}:${this.listenPort}`;
  }

  /** Runs the playbook for one host (shared with others queued at the same moment); the caller holds the host's queue. */
  async playbook(host: HostRow, onTask?: (task: string) => void): Promise<PlaybookOutcome> {
    const bundle = await this.agentBundle();
    const configPath = this.configPath(host.uuid);
    await mkdir(dirname(configPath), { recursive: true, mode: 0o700 });
    await writeFile(configPath, this.configFor(host), { mode: 0o600 });
    // A libvirt host gets its cluster's migration key (controller/deploy/migration-keys.ts).
    const mk = this.opts.hypervisor === 'libvirt' && host.clusterUuid ? await clusterMigrationKey(this.opts.dataDir, host.clusterUuid) : undefined;
    return (this.opts.playbook ?? ((h, t) => this.runner.run(h, t)))({
      name: host.uuid, address: host.managementIp, port: host.sshPort, user: host.sshUser ?? 'root', become: host.sshBecome ?? false,
      hostKey: host.sshHostKey!,
      vars: {
        hk_bundle_src: bundle.path, hk_config_src: configPath, hk_hypervisor: this.opts.hypervisor, hk_become: host.sshBecome ?? false,
        ...(mk ? { hk_migration_key_src: mk.privateKeyPath, hk_migration_pubkey: mk.publicKey } : {}),
      },
    } satisfies PlaybookHost, onTask);
  }

  private configFor(host: HostRow): string {
    return agentConfig({ uuid: host.uuid, agentSecret: host.agentSecret! }, host.controllerUrl ?? this.controllerUrl('127.0.0.1'), this.agentPort, this.opts.hypervisor);
  }

  private sshOpen(t: SshTarget): Promise<SshLike> {
    return (this.opts.sshOpen ?? SshSession.open)(t);
  }

  private keySession(host: HostRow): Promise<SshLike> {
    return this.sshOpen({
      host: host.managementIp, port: host.sshPort, username: host.sshUser ?? 'root', privateKey: this.key.privateKey,
      knownHostKey: host.sshHostKey, timeoutMs: this.opts.sshTimeoutMs,
    });
  }

  /**
   * What differs between the host and what this controller would deploy; empty when
   * nothing does. Over SSH with the key.
   */
  async drift(host: HostRow): Promise<string[]> {
    const bundle = await this.agentBundle();
    const ssh = await this.keySession(host);
    try {
      const kvm = this.opts.hypervisor === 'libvirt' ? `; ${REMOTE.kvmctl} status >/dev/null 2>&1 && echo kvm-running` : '';
      const r = await ssh.exec(shCommand(`sha256sum ${REMOTE.bundle} ${REMOTE.config} 2>/dev/null; ${REMOTE.ctl} status >/dev/null 2>&1 && echo agent-running${kvm}`, host.sshBecome), { timeoutMs: 15_000 });
      const sums = new Map(r.stdout.split('\n').map((l) => l.trim().split(/\s+/)).filter((p) => p.length === 2).map(([sum, file]) => [file!, sum!]));
      const out: string[] = [];
      if (sums.get(REMOTE.bundle) !== bundle.sha) out.push(sums.has(REMOTE.bundle) ? 'the agent differs from this controller\'s' : 'the agent is not installed');
      if (sums.get(REMOTE.config) !== sha256hex(this.configFor(host))) out.push(sums.has(REMOTE.config) ? 'the agent config differs' : 'the agent config is missing');
      if (!/agent-running/.test(r.stdout)) out.push('the agent is not running');
      if (kvm && !/kvm-running/.test(r.stdout)) out.push('libvirtd or virtlogd is not running (or the KVM stack is not installed)');
      return out;
    } finally {
      ssh.close();
    }
  }

  /**
   * ReconnectHost for a host deployed over SSH: redeploys when the host drifted from what
   * this controller deploys, then connects. Hosts registered by token just connect. Errors
   * carry the reason only; the API wraps them as HOST.1002 naming the host.
   */
  async reconnect(uuid: string, job?: JobHandle): Promise<HostRow> {
    return this.hosts.queue.run(uuid, async () => {
      const host = await this.hosts.mustGet(uuid);
      if (host.sshHostKey && host.deployPhase !== 'login') {
        let drift: string[] = [];
        try {
          this.report(job, { current: 1, total: 3, step: 'check-deployment' });
          drift = await this.drift(host);
        } catch (err) {
          if (err instanceof SshError && err.kind === 'host-key-changed') {
            await this.repo.transaction((tx) => this.hosts.applyStatusEvent(tx, uuid, 'disconnected', err.message));
            throw new Error(err.message);
          }
          // No SSH (stopped sshd, firewall): the agent may still answer, so go on and connect.
          this.log.warn({ host: uuid, err: (err as Error).message }, 'could not check the deployment over SSH; connecting anyway');
        }
        if (drift.length > 0) {
          this.log.info({ host: uuid, drift }, 'redeploying the agent');
          this.report(job, { current: 2, total: 3, step: 'deploy-agent', message: drift.join('; ') });
          const o = await this.playbook(host, (task) => this.report(job, { current: 2, total: 3, step: 'deploy-agent', message: task }));
          if (!o.ok) {
            const why = playbookError(o);
            await this.repo.transaction((tx) => this.hosts.applyStatusEvent(tx, uuid, 'disconnected', why));
            throw new Error(`redeploying the agent (${drift.join('; ')}) failed: ${why}`);
          }
        }
        this.report(job, { current: 3, total: 3, step: 'connect' });
      }
      const connected = await this.agents.connectHeld(uuid, host.sshHostKey ? undefined : job);
      if (connected.deployPhase === 'deploying') await this.repo.transaction((tx) => tx.update<HostRow>('host', uuid, { deployPhase: 'done' }));
      return this.hosts.mustGet(uuid);
    });
  }

  /**
   * Undoes a deployment on the host, best effort (DeleteHost, a failed add): stops and
   * disables the agent, removes its config and the state dir's copy (the secret), and this
   * controller's key from authorized_keys. Only when the installed config is still this
   * host's (same sha256): a re-add of the same address may already have deployed anew.
   * Also removes the controller's own copy of the config.
   */
  async stopAgent(host: HostRow): Promise<boolean> {
    await rm(this.configPath(host.uuid), { force: true });
    if (!host.sshHostKey || host.deployPhase === 'login' || !host.agentSecret) return false;
    const ssh = await this.keySession(host);
    try {
      const script = [
        'read -r want', 'read -r key',
        `f=${REMOTE.config}`,
        'if [ -f "$f" ] && [ "$(sha256sum < "$f" | cut -d" " -f1)" = "$want" ]; then',
        `  [ -x ${REMOTE.ctl} ] && ${REMOTE.ctl} stop >/dev/null 2>&1`,
        '  command -v systemctl >/dev/null 2>&1 && systemctl disable --quiet hostkeeper-agent >/dev/null 2>&1',
        `  rm -f "$f" ${REMOTE.stateCopy} ${REMOTE.migrationKey}`,
        // The cluster's migration key may no longer reach this host (its restricted line).
        '  a="$HOME/.ssh/authorized_keys"',
        '  if [ -f "$a" ] && grep -q " hostkeeper-migration" "$a"; then grep -v " hostkeeper-migration" "$a" > "$a.hk-new"; chmod 600 "$a.hk-new"; mv -f "$a.hk-new" "$a"; fi',
        'fi',
        'a="$HOME/.ssh/authorized_keys"',
        'if [ -f "$a" ] && grep -qxF "$key" "$a"; then grep -vxF "$key" "$a" > "$a.hk-new"; chmod 600 "$a.hk-new"; mv -f "$a.hk-new" "$a"; fi',
        'echo done',
      ].join('\n');
      const r = await ssh.exec(shCommand(script, host.sshBecome), {
        stdin: `${sha256hex(this.configFor(host))}\n${this.key.publicKey.trim()}\n`, timeoutMs: 30_000,
      });
      return r.code === 0;
    } finally {
      ssh.close();
    }
  }

  private configPath(uuid: string): string {
    return join(this.opts.dataDir, 'ansible', 'configs', `${uuid}.json`);
  }

  /**
   * Start-up, before the API listens: a host whose add was cut before its key was installed
   * cannot be finished (the password is gone) and is removed.
   */
  async dropInterruptedLogins(): Promise<void> {
    for (const h of await this.repo.find<HostRow>('host', { deployPhase: 'login' })) {
      if (!this.mine(h)) continue; // another live controller is logging in right now
      await this.giveUp(h.uuid, false, 'the controller restarted while logging in with the password, which is not kept: add the host again');
    }
  }

  /**
   * Start-up, once listening: a host whose add was cut after its key was installed is
   * deployed and connected again; if that fails it is removed, or kept Disconnected when its
   * add asked for that (ReconnectHost then tries again).
   */
  async resumeDeployments(): Promise<void> {
    for (const h of await this.repo.find<HostRow>('host', { deployPhase: 'deploying' })) {
      if (this.active.has(h.uuid) || !this.mine(h)) continue;
      // Claimed in a transaction: of several controllers seeing a dead one's deployment, one resumes it.
      const me = this.members?.uuid;
      if (me && h.deployBy !== me) {
        const claimed = await this.repo.transaction(async (tx) => {
          const cur = await tx.get<HostRow>('host', h.uuid);
          if (!cur || cur.deployPhase !== 'deploying' || cur.deployBy !== h.deployBy) return false;
          await tx.update<HostRow>('host', h.uuid, { deployBy: me });
          return true;
        });
        if (!claimed) continue;
      }
      this.log.info({ host: h.uuid, from: h.deployBy }, 'resuming a deployment cut by a restart');
      void this.reconnect(h.uuid).catch(async (err) => {
        const reason = `resuming the deployment after a restart failed: ${(err as Error).message}`;
        this.log.warn({ host: h.uuid, err: (err as Error).message }, 'resumed deployment failed');
        const now = await this.repo.get<HostRow>('host', h.uuid);
        if (!now || now.deployPhase !== 'deploying' || now.keepOnFailure) return;
        await this.stopAgent(now).catch(() => undefined);
        await this.hosts.queue.run(h.uuid, () => this.giveUp(h.uuid, false, reason));
      });
    }
  }

  private mine(h: HostRow): boolean {
    const m = this.members;
    // Before the cluster has read who is live (start-up), only our own.
    return !m || !h.deployBy || h.deployBy === m.uuid || (m.started && !m.isLive(h.deployBy));
  }

  isDeploying(uuid: string): boolean {
    return this.active.has(uuid);
  }

  async stop(): Promise<void> {
    await this.runner.drain();
  }
}

/** Runs agent/build.ts (esbuild) in a child process: one file, the same bytes for the same source. */
function buildBundle(outDir: string): Promise<void> {
  return new Promise((ok, fail) => {
    execFile(process.execPath, ['--import', 'tsx', join(ROOT, 'agent/build.ts'), '--out', outDir], { cwd: ROOT, timeout: 120_000 }, (err, _out, stderr) => {
      if (err) fail(new Error(`building the agent bundle failed: ${(stderr || err.message).trim().split('\n').slice(-3).join(' ')}`));
      else ok();
    });
  });
}

export function playbookError(o: PlaybookOutcome): string {
  if (o.unreachable) return `ansible could not reach the host over SSH with the controller's key: ${o.message}`;
  return o.failedTask ? `the playbook failed at task "${o.failedTask}": ${o.message}` : o.message ?? 'the playbook failed';
}
