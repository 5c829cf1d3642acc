/**
 * The agent and fleet commands as processes: one clear line and a non-zero exit on a bad
 * flag, a port in use, an unusable state dir or a refused registration; a clean stop on
 * SIGTERM; the fleet's children and its final line.
 */
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { FlagError, parseAgentFlags } from '../../agent/flags.ts';
import { fakeController, HOST_UUID, later, runAgentProcess, SECRET, signedPost, tempDir } from './helpers.ts';


const run = runAgentProcess;

async function lineMatching(lines: string[], re: RegExp, ms = 15_000): Promise<string> {
  const end = Date.now() + ms;
  for (;;) {
    const hit = lines.find((l) => re.test(l));
    if (hit) return hit;
    if (Date.now() > end) throw new Error(`no line matching ${re} in:\n${lines.join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function freePortHeld(): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise((r) => srv.close(() => r())) };
}

describe('agent flags', () => {
  const D = { stateDir: '/var/lib/hostkeeper-agent' };
  it('defaults: 0.0.0.0:7070, libvirt, /var/lib/hostkeeper-agent', () => {
    expect(parseAgentFlags([], D)).toMatchObject({ listen: { host: '0.0.0.0', port: 7070 }, hypervisor: 'libvirt', stateDir: D.stateDir, help: false });
  });
  it('takes --name value and --name=value', () => {
    expect(parseAgentFlags(['--listen=127.0.0.1:0', '--controller', 'http://10.0.0.1:8080/', '--bootstrap-token', 'tok', '--hypervisor=simulator'], D)).toMatchObject({
      listen: { host: '127.0.0.1', port: 0 }, controllerUrl: 'http://10.0.0.1:8080', bootstrapToken: 'tok', hypervisor: 'simulator',
    });
  });
  it.each([
    [['--bogus'], 'unknown flag --bogus (see --help)'],
    [['--listen', '300.1.1.1:7070'], '--listen must be IP:PORT like 0.0.0.0:7070, got "300.1.1.1:7070"'],
    [['--listen', '127.0.0.1:70000'], '--listen must be IP:PORT like 0.0.0.0:7070, got "127.0.0.1:70000"'],
    [['--listen', 'localhost:7070'], '--listen must be IP:PORT like 0.0.0.0:7070, got "localhost:7070"'],
    [['--hypervisor', 'xen'], '--hypervisor must be libvirt or simulator, got "xen"'],
    [['--bootstrap-token', 't'], '--bootstrap-token needs --controller URL'],
    [['--controller', 'ftp://x'], '--controller must be an http(s) URL like http://10.0.0.1:8080, got "ftp://x"'],
    [['--state-dir'], '--state-dir needs a value'],
    [['--state-dir', 'a', '--state-dir', 'b'], '--state-dir given twice'],
    [['stray'], 'unexpected argument "stray" (flags look like --name value)'],
    [['--help=yes'], '--help takes no value'],
    [['--log-level', 'loud'], '--log-level must be one of fatal, error, warn, info, debug, trace, silent'],
  ])('%j -> %s', (argv, msg) => {
    expect(() => parseAgentFlags(argv, D)).toThrow(new FlagError(msg));
  });
});

describe('npm run agent / npm run fleet: one line and exit 1', () => {
  type Case = { name: string; setup: () => Promise<{ script?: 'agent/main.ts' | 'agent/fleet.ts'; args: string[]; line: string }> };
  const agentArgs = async (...more: string[]) => ['--listen', '127.0.0.1:0', '--state-dir', await tempDir(), '--hypervisor', 'simulator', ...more];
  const CASES: Case[] = [
    { name: 'a bad flag', setup: async () => ({ args: ['--bogus'], line: 'hostkeeper-agent: unknown flag --bogus (see --help)' }) },
    {
      name: 'a port in use',
      setup: async () => {
        const held = await freePortHeld();
        later(held.close);
        return { args: ['--listen', `127.0.0.1:${held.port}`, '--state-dir', await tempDir(), '--hypervisor', 'simulator'], line: `hostkeeper-agent: cannot listen on 127.0.0.1:${held.port}: address already in use` };
      },
    },
    {
      name: 'an unusable state dir',
      setup: async () => {
        const dir = join(await tempDir(), 'file');
        await writeFile(dir, 'not a dir');
        return { args: ['--listen', '127.0.0.1:0', '--state-dir', dir, '--hypervisor', 'simulator'], line: `hostkeeper-agent: state dir ${dir} is not usable: ENOTDIR` };
      },
    },
    {
      name: 'a missing --config file',
      setup: async () => {
        const missing = join(await tempDir(), 'missing.json');
        return { args: await agentArgs('--config', missing), line: `hostkeeper-agent: cannot read config file ${missing}: ENOENT` };
      },
    },
    {
      name: 'a refused registration',
      setup: async () => {
        const fc = await fakeController('right');
        return { args: await agentArgs('--controller', fc.url, '--bootstrap-token', 'wrong'), line: `hostkeeper-agent: controller ${fc.url} refused the registration (HTTP 403): bootstrap token is not valid` };
      },
    },
    { name: 'a fleet without --controller', setup: async () => ({ script: 'agent/fleet.ts', args: ['--count', '3'], line: 'hostkeeper-fleet: --controller is required (see --help)' }) },
    { name: 'a fleet with a bad --first-ip', setup: async () => ({ script: 'agent/fleet.ts', args: ['--count', '3', '--controller', 'http://127.0.0.1:1', '--bootstrap-token', 't', '--first-ip', '127.0.0'], line: 'hostkeeper-fleet: --first-ip must be an IPv4 address, got "127.0.0"' }) },
  ];

  // The processes are independent: run them side by side (each takes ~1 s to start).
  it(`covers: ${CASES.map((c) => c.name).join(', ')}`, async () => {
    const results = await Promise.all(
      CASES.map(async (c) => {
        const { script, args, line } = await c.setup();
        const r = run(script ?? 'agent/main.ts', args);
        return { name: c.name, code: await r.exit, stderr: r.stderr, line };
      }),
    );
    for (const r of results) expect({ name: r.name, code: r.code, stderr: r.stderr }).toEqual({ name: r.name, code: 1, stderr: [r.line] });
  });
});

describe('npm run agent', () => {
  it('serves, and stops cleanly (exit 0) on SIGTERM', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'agent.json'), JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET }), { mode: 0o600 });
    const held = await freePortHeld();
    await held.close();
    const r = run('agent/main.ts', ['--listen', `127.0.0.1:${held.port}`, '--state-dir', dir, '--hypervisor', 'simulator']);
    const ready = JSON.parse(await lineMatching(r.stdout, /"agent ready"/));
    expect(ready.url).toBe(`https://127.0.0.1:${held.port}`);
    expect((await signedPost({ url: ready.url }, '/host/echo', {})).body).toEqual({ success: true });
    r.child.kill('SIGTERM');
    expect(await r.exit).toBe(0);
    expect(r.stderr).toEqual([]);
  });

});

describe('npm run fleet', () => {
  it('runs agents in child processes, prints the final line, and stops them all on SIGTERM', async () => {
    const fc = await fakeController('fleet-token');
    const base = `127.${100 + Math.floor(Math.random() * 150)}.${Math.floor(Math.random() * 200)}.1`;
    const r = run('agent/fleet.ts', ['--count', '6', '--per-process', '3', '--controller', fc.url, '--bootstrap-token', 'fleet-token', '--state-dir', await tempDir(), '--first-ip', base, '--port', '17070']);
    const last = base.replace(/\.1$/, '.6');
    const line = await lineMatching(r.stdout, /^fleet: 6 agents up/, 30_000);
    expect(line).toMatch(new RegExp(`^fleet: 6 agents up on ${base.replaceAll('.', '\\.')}-${last.replaceAll('.', '\\.')}:17070 in \\d+\\.\\d s \\(2 processes\\)$`));
    expect(fc.registrations).toHaveLength(6);
    r.child.kill('SIGTERM');
    expect(await r.exit).toBe(0);
    // the children are gone too: nobody listens on those addresses any more
    const probe = net.connect(17070, base);
    await expect(new Promise((res, rej) => probe.on('connect', res).on('error', rej))).rejects.toThrow(/ECONNREFUSED/);
  }, 40_000);
});
