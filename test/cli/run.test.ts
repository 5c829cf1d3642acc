/**
 * runCli in-process against a fake controller (real HTTP on 127.0.0.1): polling, progress,
 * the auth header, exit codes and the session file. Polls do not wait (HOSTKEEPER_POLL_MS=0).
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runCli, type CliIo } from '../../controller/cli/run.ts';
import { startFakeController, type FakeController, type Script } from './fake-controller.ts';

const SESSION = 'a'.repeat(32);
const JOB = 'b'.repeat(32);
const HOST = { uuid: 'c'.repeat(32), name: 'kvm1', managementIp: '10.0.0.1', state: 'Enabled', status: 'Connected' };
const jobAt = (base: string) => `${base}/zstack/v1/api-jobs/${JOB}`;
const accepted = (base: string) => ({ status: 202, json: { location: jobAt(base) } });
const hostError = { error: { code: 'HOST.1000', description: 'unable to add host', details: 'host[ip:10.0.0.1] ssh: permission denied' } };

let dir: string;
let fake: FakeController | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hk-cli-'));
});
afterEach(async () => {
  await fake?.close();
  fake = undefined;
  await rm(dir, { recursive: true, force: true });
});

interface TestIo extends CliIo {
  out: () => string;
  err: () => string;
  sleeps: number[];
}

function makeIo(over: { env?: Record<string, string | undefined>; isTTY?: boolean; columns?: number } = {}): TestIo {
  let out = '';
  let err = '';
  const sleeps: number[] = [];
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    env: {
      HOSTKEEPER_URL: fake?.base,
      HOSTKEEPER_SESSION_FILE: join(dir, 'session'),
      HOSTKEEPER_POLL_MS: '0',
      ...over.env,
    },
    isTTY: over.isTTY ?? false,
    columns: over.columns,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    out: () => out,
    err: () => err,
    sleeps,
  };
}

async function serve(script: Script): Promise<FakeController> {
  fake = await startFakeController(script);
  return fake;
}

async function loggedIn(): Promise<void> {
  await writeFile(join(dir, 'session'), `${SESSION}\n`);
}

const addHostArgs = ['AddKVMHost', 'clusterUuid=cu', 'managementIp=10.0.0.1', 'name=kvm1', 'username=root', 'password=pw', 'sshPort=22'];

describe('login and logout', () => {
  it('LogInByAccount stores the session uuid with mode 0600 under HOME/.hostkeeper (0700)', async () => {
    const f = await serve({
      'PUT /zstack/v1/accounts/login': [{ status: 200, json: { inventory: { uuid: SESSION, accountUuid: 'x', expiredDate: 'Jun 1, 2015 6:49:24 PM' } } }],
    });
    const io = makeIo({ env: { HOSTKEEPER_SESSION_FILE: undefined, HOME: dir } });
    expect(await runCli(['LogInByAccount', 'accountName=admin', 'password=secret'], io)).toBe(0);
    expect(f.requests).toHaveLength(1);
    expect(f.requests[0]!.body).toEqual({ logInByAccount: { accountName: 'admin', password: 'secret' } });
    expect(f.requests[0]!.headers.authorization).toBeUndefined();
    const file = join(dir, '.hostkeeper', 'session');
    expect((await readFile(file, 'utf8')).trim()).toBe(SESSION);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, '.hostkeeper'))).mode & 0o777).toBe(0o700);
    expect(JSON.parse(io.out()).inventory.uuid).toBe(SESSION);
    expect(io.out()).toContain('\n  "inventory": {\n    "uuid"');
  });

  it('a wrong password is exit 1 and stores nothing', async () => {
    await serve({
      'PUT /zstack/v1/accounts/login': [{ status: 401, json: { error: { code: 'ID.1000', description: 'authentication failed', details: 'wrong account name or password' } } }],
    });
    const io = makeIo();
    expect(await runCli(['LogInByAccount', 'accountName=admin', 'password=no'], io)).toBe(1);
    expect(io.err()).toMatch(/^Error: ID.1000 authentication failed: wrong account name or password\n/);
    await expect(stat(join(dir, 'session'))).rejects.toThrow(/ENOENT/);
  });

  it('LogOut deletes the session on the controller and the file', async () => {
    const f = await serve({ [`DELETE /zstack/v1/accounts/sessions/${SESSION}`]: [{ status: 200, json: {} }] });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['LogOut'], io)).toBe(0);
    expect(f.requests[0]!.headers.authorization).toBe(`OAuth ${SESSION}`);
    await expect(stat(join(dir, 'session'))).rejects.toThrow(/ENOENT/);
  });

  it('LogOut without a session sends nothing', async () => {
    const f = await serve({});
    const io = makeIo();
    expect(await runCli(['LogOut'], io)).toBe(0);
    expect(f.requests).toHaveLength(0);
    expect(io.err()).toMatch(/not logged in/);
  });
});

describe('async calls', () => {
  it('follows 202 -> 202 with progress -> 200, with the auth header on every call', async () => {
    const f = await serve({
      'POST /zstack/v1/hosts/kvm': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [
        { status: 202, json: { progress: { current: 2, total: 5, step: 'run-playbook', message: 'TASK [agent : copy agent]' } } },
        { status: 202, json: {} },
        { status: 200, json: { inventory: HOST } },
      ],
    });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(addHostArgs, io)).toBe(0);
    expect(JSON.parse(io.out())).toEqual({ inventory: HOST });
    expect(io.out()).toBe(`${JSON.stringify({ inventory: HOST }, null, 2)}\n`);
    // Not a terminal: no progress line at all.
    expect(io.err()).toBe('');

    expect(f.requests.map((r) => `${r.method} ${r.path}`)).toEqual([
      'POST /zstack/v1/hosts/kvm',
      `GET /zstack/v1/api-jobs/${JOB}`,
      `GET /zstack/v1/api-jobs/${JOB}`,
      `GET /zstack/v1/api-jobs/${JOB}`,
    ]);
    for (const r of f.requests) expect(r.headers.authorization).toBe(`OAuth ${SESSION}`);
    const post = f.requests[0]!;
    expect(post.headers['x-job-uuid']).toMatch(/^[0-9a-f]{32}$/);
    expect(post.headers['content-type']).toBe('application/json');
    expect(post.body).toEqual({
      params: { clusterUuid: 'cu', managementIp: '10.0.0.1', name: 'kvm1', username: 'root', password: 'pw', sshPort: 22 },
    });
  });

  it('each async call gets a fresh X-Job-UUID', async () => {
    const f = await serve({ 'PUT /zstack/v1/hosts/hu/actions': [{ status: 200, json: { inventory: HOST } }] });
    await loggedIn();
    await runCli(['ReconnectHost', 'uuid=hu'], makeIo());
    await runCli(['ReconnectHost', 'uuid=hu'], makeIo());
    const ids = f.requests.map((r) => r.headers['x-job-uuid']);
    expect(ids[0]).not.toBe(ids[1]);
  });

  it('on a terminal, draws the progress line on stderr and clears it', async () => {
    await serve({
      'PUT /zstack/v1/hosts/hu/actions': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [
        { status: 202, json: { progress: { current: 2, total: 5, step: 'run-playbook', message: 'TASK [agent : copy agent]' } } },
        { status: 200, json: { inventory: HOST } },
      ],
    });
    await loggedIn();
    const io = makeIo({ isTTY: true });
    expect(await runCli(['ReconnectHost', 'uuid=hu'], io)).toBe(0);
    const err = io.err();
    expect(err).toContain('\r[####......] 2/5 run-playbook: TASK [agent : copy agent]');
    // Ends cleared: a carriage return, blanks over the line, a carriage return.
    expect(err).toMatch(/\r +\r$/);
    expect(io.out()).toBe(`${JSON.stringify({ inventory: HOST }, null, 2)}\n`);
  });

  it('a final answer given at once (200) is printed without polling', async () => {
    const f = await serve({ 'POST /zstack/v1/zones': [{ status: 200, json: { inventory: { uuid: 'z', name: 'z1' } } }] });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['CreateZone', 'name=z1'], io)).toBe(0);
    expect(f.requests).toHaveLength(1);
    expect(JSON.parse(io.out()).inventory.name).toBe('z1');
  });

  it('a delete answered 204 prints {}', async () => {
    await serve({ 'DELETE /zstack/v1/hosts/hu': [{ status: 204 }] });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['DeleteHost', 'uuid=hu', 'deleteMode=Enforcing'], io)).toBe(0);
    expect(io.out()).toBe('{}\n');
    expect(fake!.requests[0]!.url).toBe('/zstack/v1/hosts/hu?deleteMode=Enforcing');
  });

  it('a failed job (503) prints the error and exits 1', async () => {
    await serve({
      'POST /zstack/v1/hosts/kvm': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [{ status: 503, json: hostError }],
    });
    await loggedIn();
    const io = makeIo({ isTTY: true });
    expect(await runCli(addHostArgs, io)).toBe(1);
    expect(io.out()).toBe('');
    expect(io.err()).toContain('Error: HOST.1000 unable to add host: host[ip:10.0.0.1] ssh: permission denied\n');
    expect(io.err()).toContain(JSON.stringify(hostError, null, 2));
    expect(io.err()).not.toMatch(/\n\s+at /);
  });

  it('an expired job (404) says so and exits 1', async () => {
    await serve({
      'PUT /zstack/v1/hosts/hu/actions': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [{ status: 404, json: { error: { code: 'SYS.1008', description: 'resource not found', details: 'the job has been expired' } } }],
    });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['ChangeHostState', 'uuid=hu', 'stateEvent=maintain'], io)).toBe(1);
    expect(io.err()).toMatch(new RegExp(`^Error: job\\[${JOB}\\] is unknown or has expired \\(HTTP 404\\)\\n`));
  });

  it('a relative location is resolved against HOSTKEEPER_URL', async () => {
    const f = await serve({
      'POST /zstack/v1/zones': [{ status: 202, json: { location: `/zstack/v1/api-jobs/${JOB}` } }],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [{ status: 200, json: { inventory: { uuid: 'z' } } }],
    });
    await loggedIn();
    expect(await runCli(['CreateZone', 'name=z'], makeIo())).toBe(0);
    expect(f.requests).toHaveLength(2);
  });

  it('backs off from 50 ms, doubling, up to 1 s', async () => {
    await serve({
      'POST /zstack/v1/zones': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [...Array.from({ length: 7 }, () => ({ status: 202, json: {} })), { status: 200, json: { inventory: {} } }],
    });
    await loggedIn();
    const io = makeIo({ env: { HOSTKEEPER_POLL_MS: undefined } });
    expect(await runCli(['CreateZone', 'name=z'], io)).toBe(0);
    expect(io.sleeps).toEqual([50, 100, 200, 400, 800, 1000, 1000, 1000]);
  });

  it('tells the caller which job it follows, then that it is done', async () => {
    await serve({
      'POST /zstack/v1/zones': [accepted],
      [`GET /zstack/v1/api-jobs/${JOB}`]: [{ status: 200, json: { inventory: {} } }],
    });
    await loggedIn();
    const seen: unknown[] = [];
    expect(await runCli(['CreateZone', 'name=z'], { ...makeIo(), onJob: (j) => seen.push(j?.uuid) })).toBe(0);
    expect(seen).toEqual([JOB, undefined]);
  });

  it('GetJob shows one look at a running job without polling', async () => {
    const f = await serve({ [`GET /zstack/v1/api-jobs/${JOB}`]: [{ status: 202, json: { progress: { current: 1, total: 3 } } }] });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['GetJob', `uuid=${JOB}`], io)).toBe(0);
    expect(f.requests).toHaveLength(1);
    expect(JSON.parse(io.out())).toEqual({ progress: { current: 1, total: 3 } });
  });
});

describe('errors', () => {
  it('401 adds the login hint', async () => {
    await serve({ 'GET /zstack/v1/hosts': [{ status: 401, json: { error: { code: 'ID.1001', description: 'invalid or expired session', details: 'session expired' } } }] });
    const io = makeIo();
    expect(await runCli(['QueryHost'], io)).toBe(1);
    expect(io.err()).toMatch(/^Error: ID.1001 invalid or expired session: session expired\n/);
    expect(io.err()).toContain('run: hostkeeper LogInByAccount accountName=admin password=...\n');
    // Not logged in: no Authorization header at all.
    expect(fake!.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('400 prints the code, description and details, and the body', async () => {
    const body = { error: { code: 'SYS.1007', description: 'invalid argument', details: 'field[cpuNum] takes a number, not [x]' } };
    await serve({ 'GET /zstack/v1/hosts': [{ status: 400, json: body }] });
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['QueryHost', 'cpuNum=x'], io)).toBe(1);
    expect(io.err()).toBe(`Error: SYS.1007 invalid argument: field[cpuNum] takes a number, not [x]\n${JSON.stringify(body, null, 2)}\n`);
    expect(fake!.requests[0]!.url).toBe('/zstack/v1/hosts?q=cpuNum%3Dx');
  });

  it('a non-ZStack error page (route not there yet) is one line', async () => {
    await serve({});
    await loggedIn();
    const io = makeIo();
    expect(await runCli(['CreateBootstrapToken', 'clusterUuid=cu'], io)).toBe(1);
    expect(io.err()).toBe('Error: HTTP 404 Not Found: Cannot POST /zstack/v1/hosts/bootstrap-tokens\n');
  });

  it('a refused connection names the URL', async () => {
    // A port that was free a moment ago: nothing listens there.
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const io = makeIo({ env: { HOSTKEEPER_URL: `http://127.0.0.1:${port}` } });
    expect(await runCli(['QueryZone'], io)).toBe(1);
    expect(io.err()).toBe(`Error: cannot reach the controller at http://127.0.0.1:${port}: connect ECONNREFUSED 127.0.0.1:${port}\n`);
  });

  it('a bad HOSTKEEPER_URL is a usage error', async () => {
    const io = makeIo({ env: { HOSTKEEPER_URL: 'ftp://x' } });
    expect(await runCli(['QueryZone'], io)).toBe(2);
    expect(io.err()).toMatch(/HOSTKEEPER_URL \[ftp:\/\/x\] must be an http/);
  });

  it('HOSTKEEPER_URL may end in /zstack/', async () => {
    const f = await serve({ 'GET /zstack/v1/zones': [{ status: 200, json: { inventories: [] } }] });
    const io = makeIo({ env: { HOSTKEEPER_URL: `${f.base}/zstack/` } });
    expect(await runCli(['QueryZone'], io)).toBe(0);
    expect(f.requests[0]!.path).toBe('/zstack/v1/zones');
  });
});

describe('usage mistakes send nothing and exit 2', () => {
  it.each<[string, string[], RegExp]>([
    ['unknown action', ['AddHost', 'name=x'], /^Error: unknown action \[AddHost\]; run: hostkeeper help\n$/],
    ['unknown key', [...addHostArgs, 'sshport=22'], /^Error: AddKVMHost has no key \[sshport\]; its keys are .*\nUsage: hostkeeper AddKVMHost clusterUuid= /],
    ['missing key', ['AddKVMHost', 'clusterUuid=cu'], /^Error: AddKVMHost needs key \[managementIp\]\n/],
    ['bad enum', ['ChangeHostState', 'uuid=u', 'stateEvent=off'], /^Error: ChangeHostState: stateEvent must be one of/],
    ['help for an unknown action', ['help', 'Nope'], /^Error: unknown action \[Nope\]/],
  ])('%s', async (_name, argv, err) => {
    const f = await serve({});
    await loggedIn();
    const io = makeIo();
    expect(await runCli(argv, io)).toBe(2);
    expect(io.err()).toMatch(err);
    expect(io.out()).toBe('');
    expect(f.requests).toHaveLength(0);
  });
});

describe('help', () => {
  it.each([[[]], [['help']], [['--help']]])('%j lists the actions on stdout, exit 0', async (argv) => {
    const io = makeIo();
    expect(await runCli(argv, io)).toBe(0);
    expect(io.out()).toContain('  AddKVMHost clusterUuid= managementIp= name= username= password= [sshPort=N]');
    expect(io.err()).toBe('');
  });

  it.each([[['help', 'QueryHost']], [['QueryHost', '--help']]])('%j shows one action', async (argv) => {
    const io = makeIo();
    expect(await runCli(argv, io)).toBe(0);
    expect(io.out()).toMatch(/^Usage: hostkeeper QueryHost \[<field><op><value> \.\.\.\]/);
    expect(io.out()).toContain('REST: GET /zstack/v1/hosts');
  });
});
