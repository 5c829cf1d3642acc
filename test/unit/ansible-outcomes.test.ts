/**
 * How one ansible-playbook run's JSON events (ansible/callback_plugins/hostkeeper.py) become
 * each host's outcome: table-driven over recorded event sequences.
 */
import { describe, expect, it } from 'vitest';
import { type AnsibleEvent, outcomes } from '../../controller/deploy/ansible.ts';
import { playbookError } from '../../controller/deploy/deployer.ts';
import { hostKeyLine, knownHostsLine } from '../../controller/deploy/ssh.ts';

const stats = (h: Record<string, Partial<{ ok: number; changed: number; failed: number; unreachable: number }>>): AnsibleEvent => ({
  event: 'stats',
  hosts: Object.fromEntries(Object.entries(h).map(([k, v]) => [k, { ok: 0, changed: 0, failed: 0, unreachable: 0, skipped: 0, ...v }])),
});

const CASES: { name: string; events: AnsibleEvent[]; exit?: { code: number | null; stderr: string }; want: Record<string, { ok: boolean; changed?: number; error?: RegExp }> }[] = [
  {
    name: 'two hosts, both fine, one unchanged',
    events: [{ event: 'task', task: 'agent : copy' }, { event: 'changed', host: 'a', task: 'agent : copy' }, { event: 'ok', host: 'b', task: 'agent : copy' }, stats({ a: { ok: 5, changed: 1 }, b: { ok: 5 } })],
    want: { a: { ok: true, changed: 1 }, b: { ok: true, changed: 0 } },
  },
  {
    name: 'one host fails a task: its message and stderr, the other is fine',
    events: [
      { event: 'failed', host: 'a', task: 'node : install nodejs', msg: 'No package matching nodejs', stderr: 'E: Unable to locate package nodejs', rc: 100 },
      stats({ a: { ok: 2, failed: 1 }, b: { ok: 6, changed: 3 } }),
    ],
    exit: { code: 2, stderr: '' },
    want: { a: { ok: false, error: /failed at task "node : install nodejs": No package matching nodejs: E: Unable to locate package nodejs/ }, b: { ok: true, changed: 3 } },
  },
  {
    name: 'unreachable host',
    events: [{ event: 'unreachable', host: 'a', task: 'node : find node', msg: 'Failed to connect to the host via ssh: Host key verification failed.' }, stats({ a: { unreachable: 1 } })],
    exit: { code: 4, stderr: '' },
    want: { a: { ok: false, error: /could not reach the host over SSH.*Host key verification failed/ } },
  },
  {
    name: 'a failure without a message says the exit code',
    events: [{ event: 'failed', host: 'a', task: 'agent : start', rc: 3 }, stats({ a: { failed: 1 } })],
    want: { a: { ok: false, error: /task "agent : start": task failed with exit code 3/ } },
  },
  {
    name: 'ansible died before its stats: stderr tail is the reason',
    events: [{ event: 'task', task: 'node : find node' }],
    exit: { code: 1, stderr: 'ERROR! the playbook: x.yml could not be found\n' },
    want: { a: { ok: false, error: /exit 1.*could not be found/ } },
  },
];

describe('outcomes of a playbook run', () => {
  it.each(CASES)('$name', ({ events, exit, want }) => {
    const got = outcomes(Object.keys(want), events, 1.5, exit ?? { code: 0, stderr: '' });
    for (const [host, w] of Object.entries(want)) {
      const o = got.get(host)!;
      expect(o.ok, host).toBe(w.ok);
      if (w.changed !== undefined) expect(o.changed).toBe(w.changed);
      if (w.error) expect(playbookError(o)).toMatch(w.error);
    }
  });
});

describe('ssh key lines', () => {
  it('names the key type from the blob, and writes known_hosts with a port when not 22', () => {
    const type = Buffer.from('ssh-ed25519');
    const blob = Buffer.concat([Buffer.from([0, 0, 0, type.length]), type, Buffer.from([0, 0, 0, 2, 1, 2])]);
    const line = hostKeyLine(blob);
    expect(line).toBe(`ssh-ed25519 ${blob.toString('base64')}`);
    expect(knownHostsLine('10.0.0.1', 22, line)).toBe(`10.0.0.1 ${line}`);
    expect(knownHostsLine('10.0.0.1', 2222, line)).toBe(`[10.0.0.1]:2222 ${line}`);
  });
});

describe('the inventory', () => {
  it('marks every string !unsafe, so a value holding a template is never evaluated', async () => {
    const { inventoryYaml } = await import('../../controller/deploy/ansible.ts');
    const y = inventoryYaml([{ name: 'h1', vars: { ansible_host: '10.0.0.5', ansible_port: 22, ansible_become: false, ansible_user: "{{ lookup('pipe','id') }}" } }]);
    expect(y).toBe([
      'all:', '  hosts:', '    "h1":',
      '      ansible_host: !unsafe "10.0.0.5"', '      ansible_port: 22', '      ansible_become: false',
      `      ansible_user: !unsafe "{{ lookup('pipe','id') }}"`, '',
    ].join('\n'));
  });
});
