/**
 * The --config file's `listen` and `hypervisor`: they stand in for the flags the command line
 * leaves out, a flag given explicitly wins, a bad value is one line naming the file and key,
 * and they never reach the state dir's agent.json (only the identity does).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyConfigFileSettings, FlagError, parseAgentFlags } from '../../agent/flags.ts';
import { parseAgentConfig, parseConfigFileSettings, readConfigFileSettings, StartupError } from '../../agent/state.ts';
import { HOST_UUID, runAgentProcess, SECRET, tempDir } from './helpers.ts';

const D = { stateDir: '/var/lib/hostkeeper-agent' };
const FILE = '/etc/hostkeeper/agent.json';

function resolved(argv: string[], file: Record<string, unknown>) {
  const settings = parseConfigFileSettings(JSON.stringify(file), FILE);
  const f = applyConfigFileSettings(parseAgentFlags(argv, D), settings, FILE);
  return { listen: `${f.listen.host}:${f.listen.port}`, hypervisor: f.hypervisor };
}

describe('--config listen/hypervisor', () => {
  it.each([
    { name: 'neither: the defaults', argv: [], file: {}, want: { listen: '0.0.0.0:7070', hypervisor: 'libvirt' } },
    { name: 'file only', argv: [], file: { listen: '127.0.9.1:7071', hypervisor: 'simulator' }, want: { listen: '127.0.9.1:7071', hypervisor: 'simulator' } },
    { name: 'null is absent', argv: [], file: { listen: null, hypervisor: null }, want: { listen: '0.0.0.0:7070', hypervisor: 'libvirt' } },
    { name: 'flags win', argv: ['--listen', '10.0.0.1:7070', '--hypervisor', 'libvirt'], file: { listen: '127.0.9.1:7071', hypervisor: 'simulator' }, want: { listen: '10.0.0.1:7070', hypervisor: 'libvirt' } },
    { name: 'a flag equal to the default still wins', argv: ['--listen=0.0.0.0:7070'], file: { listen: '127.0.9.1:7071' }, want: { listen: '0.0.0.0:7070', hypervisor: 'libvirt' } },
    { name: 'mixed: flag listen, file hypervisor', argv: ['--listen', '10.0.0.1:1'], file: { listen: '127.0.9.1:7071', hypervisor: 'simulator' }, want: { listen: '10.0.0.1:1', hypervisor: 'simulator' } },
    { name: 'the identity keys are ignored here', argv: [], file: { hostUuid: HOST_UUID, secret: SECRET, controllerUrl: 'http://10.0.0.9:8080' }, want: { listen: '0.0.0.0:7070', hypervisor: 'libvirt' } },
  ])('$name', ({ argv, file, want }) => {
    expect(resolved(argv, file)).toEqual(want);
  });

  it.each([
    { file: { listen: 'localhost:7070' }, msg: `${FILE}: listen must be IP:PORT like 0.0.0.0:7070, got "localhost:7070"` },
    { file: { listen: '10.0.0.1:70000' }, msg: `${FILE}: listen must be IP:PORT like 0.0.0.0:7070, got "10.0.0.1:70000"` },
    { file: { listen: 7070 }, msg: `${FILE}: listen must be IP:PORT like 0.0.0.0:7070, got 7070` },
    { file: { hypervisor: 'xen' }, msg: `${FILE}: hypervisor must be libvirt or simulator, got "xen"` },
    { file: { hypervisor: ['simulator'] }, msg: `${FILE}: hypervisor must be libvirt or simulator, got ["simulator"]` },
    // checked even when a flag overrides it: a bad file fails whoever starts the agent
    { file: { listen: 'x' }, argv: ['--listen', '127.0.0.1:1'], msg: `${FILE}: listen must be IP:PORT like 0.0.0.0:7070, got "x"` },
  ])('$file -> $msg', ({ file, argv, msg }) => {
    expect(() => resolved(argv ?? [], file)).toThrow(new FlagError(msg));
  });

  it.each([
    { text: '{', msg: `${FILE} is not valid JSON` },
    { text: '[]', msg: `${FILE} must hold a JSON object` },
  ])('a file that is not a JSON object: $msg', ({ text, msg }) => {
    expect(() => parseConfigFileSettings(text, FILE)).toThrow(new StartupError(msg));
  });

  it('reads the file; a missing one is named with its errno', async () => {
    const dir = await tempDir();
    const path = join(dir, 'agent.json');
    await writeFile(path, JSON.stringify({ listen: '127.0.9.1:7070', hypervisor: 'simulator', extra: 1 }));
    expect(await readConfigFileSettings(path)).toEqual({ listen: '127.0.9.1:7070', hypervisor: 'simulator' });
    await expect(readConfigFileSettings(join(dir, 'none.json'))).rejects.toThrow(new StartupError(`cannot read config file ${join(dir, 'none.json')}: ENOENT`));
  });

  it('the identity parse leaves listen/hypervisor out (they never reach the state dir)', () => {
    expect(parseAgentConfig(JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET, listen: '1.2.3.4:5', hypervisor: 'simulator' }), FILE)).toEqual({ hostUuid: HOST_UUID, secret: SECRET });
  });
});

describe('npm run agent --config FILE', () => {
  const run = (args: string[]) => runAgentProcess('agent/main.ts', args);

  it('listens where the file says, with the file\'s hypervisor, and keeps them out of agent.json', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'config.json');
    await writeFile(cfg, JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET, listen: '127.0.0.2:0', hypervisor: 'simulator' }), { mode: 0o600 });
    const state = join(dir, 'state');
    const r = run(['--config', cfg, '--state-dir', state]);
    const ready = await new Promise<Record<string, unknown>>((res, rej) => {
      const t = setInterval(() => {
        const line = r.stdout.find((l) => l.includes('"agent ready"'));
        if (line) {
          clearInterval(t);
          res(JSON.parse(line));
        }
      }, 20);
      void r.exit.then((code) => {
        clearInterval(t);
        rej(new Error(`exited ${code}: ${r.stderr.join('\n')}`));
      });
    });
    expect(ready.url).toMatch(/^https:\/\/127\.0\.0\.2:\d+$/);
    expect(JSON.parse(await readFile(join(state, 'agent.json'), 'utf8'))).toEqual({ hostUuid: HOST_UUID, secret: SECRET });
    r.child.kill('SIGTERM');
    expect(await r.exit).toBe(0);
  });

  it('a bad key is one line naming the file and the key, exit 1', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'config.json');
    await writeFile(cfg, JSON.stringify({ hostUuid: HOST_UUID, secret: SECRET, hypervisor: 'xen' }), { mode: 0o600 });
    const r = run(['--config', cfg, '--state-dir', join(dir, 'state')]);
    expect(await r.exit).toBe(1);
    expect(r.stderr).toEqual([`hostkeeper-agent: ${cfg}: hypervisor must be libvirt or simulator, got "xen"`]);
  });
});
