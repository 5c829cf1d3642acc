/**
 * The CLI against the real controller over real HTTP: the README walk-through as a test.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../../controller/cli/run.ts';
import { type RunningController, startController } from '../../controller/server.ts';
import { refusingSsh } from '../fakes/ssh.ts';
import { ADMIN_PASSWORD, silentLog, tempDir } from '../helpers.ts';

let c: RunningController;
let env: Record<string, string>;

beforeAll(async () => {
  const dir = await tempDir();
  // SSH is a fake that refuses: these hosts are recorded (keepHostOnFailure), never reached.
  // The real AddKVMHost over SSH is test/e2e/add-host.test.ts, against real test hosts.
  c = await startController({ dataDir: dir, port: 0, host: '127.0.0.1', adminPassword: ADMIN_PASSWORD, log: silentLog(), sync: false, deploy: { sshOpen: refusingSsh() } });
  env = { HOSTKEEPER_URL: c.url, HOSTKEEPER_SESSION_FILE: join(dir, 'session'), HOSTKEEPER_POLL_MS: '5' };
});
afterAll(() => c.close());

async function cli(...argv: string[]): Promise<{ code: number; out: any; err: string }> {
  let out = '';
  let err = '';
  const code = await runCli(argv, {
    stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, env, isTTY: false,
  });
  let parsed: any = out;
  try {
    parsed = JSON.parse(out);
  } catch {
    /* help text */
  }
  return { code, out: parsed, err };
}

describe('hostkeeper CLI against a real controller', () => {
  it('walks through login, inventory, query, state change, configs and tags', async () => {
    expect((await cli('QueryZone')).code).toBe(1); // no session yet
    const login = await cli('LogInByAccount', 'accountName=admin', `password=${ADMIN_PASSWORD}`);
    expect(login.code).toBe(0);
    const zone = (await cli('CreateZone', 'name=zone1')).out.inventory;
    const cluster = (await cli('CreateCluster', `zoneUuid=${zone.uuid}`, 'name=cluster1', 'hypervisorType=KVM')).out.inventory;
    const added = await cli('AddKVMHost', `clusterUuid=${cluster.uuid}`, 'managementIp=192.168.10.10', 'name=kvm1', 'username=root', 'password=pw', 'systemTags=keepHostOnFailure');
    expect(added.code).toBe(1);
    expect(added.err).toMatch(/HOST\.1000.*step ssh-login failed: wrong username or password/);
    const host = (await cli('QueryHost', 'managementIp=192.168.10.10')).out.inventories[0];
    expect(host.zoneUuid).toBe(zone.uuid);
    expect(host.status).toBe('Disconnected');
    await cli('AddKVMHost', `clusterUuid=${cluster.uuid}`, 'managementIp=192.168.10.11', 'name=kvm2', 'username=root', 'password=pw', 'systemTags=keepHostOnFailure');

    const q = await cli('QueryHost', 'name~=kvm%', 'limit=10', 'replyWithCount=true', 'sortBy=name', 'sortDirection=desc', 'fields=name,managementIp');
    expect(q.out.total).toBe(2);
    expect(q.out.inventories).toEqual([{ name: 'kvm2', managementIp: '192.168.10.11' }, { name: 'kvm1', managementIp: '192.168.10.10' }]);
    expect((await cli('QueryHost', 'managementIp=192.168.10.10', 'count=true')).out).toEqual({ total: 1 });

    const disabled = await cli('ChangeHostState', `uuid=${host.uuid}`, 'stateEvent=disable');
    expect(disabled.out.inventory.state).toBe('Disabled');
    const refused = await cli('ChangeHostState', `uuid=${host.uuid}`, 'stateEvent=maintain');
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/SYS\.1006.*not Connected/);

    const cfg = await cli('UpdateGlobalConfig', 'category=host', 'name=ping.interval', 'value=30');
    expect(cfg.out.inventory.value).toBe('30');
    expect(c.core.configs.getInt('host', 'ping.interval')).toBe(30);
    expect((await cli('QueryGlobalConfig', 'category=host', 'name=ping.interval')).out.inventories[0].value).toBe('30');
    const bad = await cli('UpdateGlobalConfig', 'category=host', 'name=ping.interval', 'value=0');
    expect(bad.code).toBe(1);
    expect(bad.err).toMatch(/integer from 1 to 86400/);

    const tag = (await cli('CreateSystemTag', 'resourceType=HostVO', `resourceUuid=${host.uuid}`, 'tag=reservedMemory::1G')).out.inventory;
    expect((await cli('QuerySystemTag', `resourceUuid=${host.uuid}`)).out.inventories.map((t: any) => t.tag)).toEqual(['reservedMemory::1G']);
    expect((await cli('CreateUserTag', 'resourceType=HostVO', `resourceUuid=${host.uuid}`, 'tag=largeMemoryHost')).code).toBe(0);
    expect((await cli('DeleteTag', `uuid=${tag.uuid}`)).code).toBe(0);

    expect((await cli('DeleteZone', `uuid=${zone.uuid}`)).code).toBe(1);
    expect((await cli('DeleteHost', `uuid=${host.uuid}`)).code).toBe(0);
    expect((await cli('DeleteZone', `uuid=${zone.uuid}`, 'deleteMode=Enforcing')).code).toBe(0);
    expect((await cli('QueryHost', 'count=true')).out).toEqual({ total: 0 });
  });

  it('help lists every action with one line of usage', async () => {
    const h = await cli('help');
    expect(h.code).toBe(0);
    for (const a of ['LogInByAccount', 'CreateZone', 'CreateCluster', 'AddKVMHost', 'QueryHost', 'ChangeHostState', 'ReconnectHost', 'DeleteHost',
      'QueryGlobalConfig', 'UpdateGlobalConfig', 'CreateSystemTag', 'CreateUserTag', 'QuerySystemTag', 'DeleteTag', 'QueryZone', 'QueryCluster',
      'DeleteZone', 'DeleteCluster']) {
      expect(String(h.out).split('\n').filter((l) => l.trimStart().startsWith(a + ' ') || l.trim() === a)).toHaveLength(1);
    }
  });
});
