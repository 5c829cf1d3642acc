/**
 * Runs the bundled playbook (ansible/hostkeeper-agent.yml) with ansible-playbook.
 *
 * Deployments that arrive together share one ansible-playbook run (one inventory, forks):
 * ansible's own start-up costs about a second of CPU, and ten hosts added at once should
 * not pay it ten times on a small controller. Each caller still gets its own host's result:
 * the playbook's stdout callback (ansible/callback_plugins/hostkeeper.py) prints one JSON
 * event per line, which is split per host here, as progress (the current task) and as the
 * failing task with its message.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { Logger } from '../log.ts';
import { knownHostsLine } from './ssh.ts';

export interface PlaybookHost {
  /** Inventory name: the host's uuid (unique, unlike a hostname that could be given twice). */
  name: string;
  address: string;
  port: number;
  user: string;
  become: boolean;
  /** Recorded `<type> <base64>` host key: ansible's ssh must see the same. */
  hostKey: string;
  /** Per-host variables of the playbook (hk_*). */
  vars: Record<string, string | number | boolean>;
}

export interface PlaybookOutcome {
  ok: boolean;
  changed: number;
  /** The task that failed and what it said (failed or unreachable). */
  failedTask?: string;
  message?: string;
  unreachable?: boolean;
  seconds: number;
}

export interface PlaybookRunnerOptions {
  ansibleDir: string;
  privateKeyPath: string;
  /** Private scratch space (inventories, known_hosts): made 0700 per run. */
  workDir: string;
  log: Logger;
  /** Deployments within this window share a run. */
  batchWindowMs?: number;
  maxBatch?: number;
  timeoutMs?: number;
  /** The ansible-playbook command (tests point it elsewhere). */
  command?: string;
}

interface Pending {
  host: PlaybookHost;
  onTask?: (task: string) => void;
  resolve: (o: PlaybookOutcome) => void;
}

/** One JSON event of the hostkeeper stdout callback. */
export interface AnsibleEvent {
  event: 'task' | 'ok' | 'changed' | 'skipped' | 'failed' | 'unreachable' | 'stats';
  host?: string;
  task?: string;
  msg?: string;
  stderr?: string;
  rc?: number;
  hosts?: Record<string, { ok: number; changed: number; failed: number; unreachable: number; skipped: number }>;
}

/**
 * A YAML inventory in which every string is `!unsafe`: Ansible templates inventory values,
 * so a value holding `{{ ... }}` would otherwise run on the controller. Strings are written
 * as JSON strings, which are valid YAML double-quoted scalars.
 */
export function inventoryYaml(hosts: { name: string; vars: Record<string, string | number | boolean> }[]): string {
  const scalar = (v: string | number | boolean) => (typeof v === 'string' ? `!unsafe ${JSON.stringify(v)}` : JSON.stringify(v));
  const lines = ['all:', '  hosts:'];
  for (const h of hosts) {
    lines.push(`    ${JSON.stringify(h.name)}:`);
    for (const [k, v] of Object.entries(h.vars)) lines.push(`      ${k}: ${scalar(v)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Folds a run's events into each host's outcome (pure: unit-tested with recorded events). */
export function outcomes(names: string[], events: AnsibleEvent[], seconds: number, exit: { code: number | null; stderr: string }): Map<string, PlaybookOutcome> {
  const out = new Map<string, PlaybookOutcome>();
  const stats = events.find((e) => e.event === 'stats')?.hosts ?? {};
  for (const name of names) {
    const failure = events.find((e) => (e.event === 'failed' || e.event === 'unreachable') && e.host === name);
    const s = stats[name];
    if (failure) {
      const text = [failure.msg, failure.stderr].filter((x) => x && x.trim()).join(': ').trim();
      out.set(name, {
        ok: false, changed: s?.changed ?? 0, failedTask: failure.task, unreachable: failure.event === 'unreachable',
        message: text || `task failed${failure.rc !== undefined ? ` with exit code ${failure.rc}` : ''}`, seconds,
      });
    } else if (s && s.failed === 0 && s.unreachable === 0) {
      out.set(name, { ok: true, changed: s.changed, seconds });
    } else {
      const tail = exit.stderr.trim().split('\n').slice(-3).join(' ').slice(0, 600);
      out.set(name, {
        ok: false, changed: s?.changed ?? 0, seconds,
        message: `ansible-playbook ended (exit ${exit.code ?? 'killed'}) without a result for this host${tail ? `: ${tail}` : ''}`,
      });
    }
  }
  return out;
}

export class PlaybookRunner {
  private pending: Pending[] = [];
  private timer?: NodeJS.Timeout;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly opts: PlaybookRunnerOptions) {}

  /** Deploys to one host (sharing a run with any others queued in the same window). */
  run(host: PlaybookHost, onTask?: (task: string) => void): Promise<PlaybookOutcome> {
    return new Promise((resolve) => {
      this.pending.push({ host, onTask, resolve });
      if (this.pending.length >= (this.opts.maxBatch ?? 50)) this.flush();
      else this.timer ??= setTimeout(() => this.flush(), this.opts.batchWindowMs ?? 300);
    });
  }

  /** Waits for runs in progress (controller stop). */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all([...this.running]);
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    const p = this.runBatch(batch).catch((err: Error) => {
      for (const b of batch) b.resolve({ ok: false, changed: 0, seconds: 0, message: `cannot run ansible-playbook: ${err.message}` });
    });
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  private async runBatch(batch: Pending[]): Promise<void> {
    const started = Date.now();
    const dir = await mkdtemp(join(this.opts.workDir, 'run-'));
    try {
      const hosts = batch.map(({ host: h }) => ({
        name: h.name, vars: { ansible_host: h.address, ansible_port: h.port, ansible_user: h.user, ansible_become: h.become, ...h.vars },
      }));
      await writeFile(join(dir, 'inventory.yml'), inventoryYaml(hosts), { mode: 0o600 });
      await writeFile(join(dir, 'known_hosts'), batch.map(({ host: h }) => knownHostsLine(h.address, h.port, h.hostKey)).join('\n') + '\n', { mode: 0o600 });
      const names = batch.map((b) => b.host.name);
      const byName = new Map(batch.map((b) => [b.host.name, b]));
      const events: AnsibleEvent[] = [];
      const exit = await this.spawnPlaybook(dir, (e) => {
        events.push(e);
        if (e.event === 'task' && e.task) for (const b of batch) b.onTask?.(e.task);
      });
      const seconds = (Date.now() - started) / 1000;
      const results = outcomes(names, events, seconds, exit);
      this.opts.log.info({ hosts: names.length, seconds, exit: exit.code }, 'ansible-playbook finished');
      for (const [name, o] of results) byName.get(name)!.resolve(o);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  private spawnPlaybook(dir: string, onEvent: (e: AnsibleEvent) => void): Promise<{ code: number | null; stderr: string }> {
    const { ansibleDir, privateKeyPath } = this.opts;
    const args = [
      join(ansibleDir, 'hostkeeper-agent.yml'),
      '-i', join(dir, 'inventory.yml'),
      '--private-key', privateKeyPath,
      '--ssh-common-args', `-o UserKnownHostsFile=${join(dir, 'known_hosts')} -o StrictHostKeyChecking=yes -o PasswordAuthentication=no -o BatchMode=yes`,
    ];
    return new Promise((resolve, reject) => {
      const child = spawn(this.opts.command ?? 'ansible-playbook', args, {
        env: { ...process.env, ANSIBLE_CONFIG: join(ansibleDir, 'ansible.cfg'), ANSIBLE_NOCOLOR: '1', ANSIBLE_FORCE_COLOR: '0', PYTHONUNBUFFERED: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-8000);
      });
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (!line.startsWith('{')) return;
        try {
          onEvent(JSON.parse(line) as AnsibleEvent);
        } catch {
          // Not one of the callback's lines (a warning printed by a plugin): ignored.
        }
      });
      const timer = setTimeout(() => {
        stderr += `\nansible-playbook did not finish within ${(this.opts.timeoutMs ?? 600_000) / 1000} s and was stopped`;
        child.kill('SIGTERM');
      }, this.opts.timeoutMs ?? 600_000);
      child.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(err.code === 'ENOENT' ? new Error('ansible-playbook is not installed on the controller (install ansible-core)') : err);
      });
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stderr });
      });
    });
  }
}
