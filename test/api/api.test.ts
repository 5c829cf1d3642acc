/**
 * The admin API, bullet by bullet of the foundation issue: sessions, inventory, delete
 * modes, the admin state machine, queries, global configs, tags, reserved memory, jobs, logs.
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { openCore } from '../../controller/core.ts';
import { resolveReservedMemory, syncInherentTags } from '../../controller/services/tags.ts';
import { CONFIG_DEFS } from '../../protocol/configs.ts';
import { RESOURCES } from '../../protocol/resources.ts';
import { FakeClock } from '../fakes/clock.ts';
import {
  ADMIN_PASSWORD, call, filesUnder, finish, makeCluster, makeController, makeHost, makeZone, setStatus, silentLog, tempDir,
  type TestController,
} from '../helpers.ts';

const ZSTACK_DATE = /^[A-Z][a-z]{2} \d{1,2}, \d{4} \d{1,2}:\d{2}:\d{2} (AM|PM)$/;
let open: TestController[] = [];
async function ctl(opts: Parameters<typeof makeController>[0] = {}) {
  const t = await makeController(opts);
  open.push(t);
  return t;
}
afterEach(async () => {
  for (const t of open) await t.close().catch(() => undefined);
  open = [];
});

async function world(t: TestController) {
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  return { zone, cluster };
}

describe('sessions', () => {
  it('logs in with the password or its SHA-512 digest (ZStack clients), and refuses a wrong one', async () => {
    const t = await ctl();
    const digest = createHash('sha512').update(ADMIN_PASSWORD).digest('hex');
    for (const password of [ADMIN_PASSWORD, digest]) {
      const r = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password } });
      expect(r.status).toBe(200);
      expect(r.body.inventory.uuid).toMatch(/^[0-9a-f]{32}$/);
      expect(r.body.inventory.expiredDate).toMatch(ZSTACK_DATE);
      expect(r.body.schema).toEqual({ inventory: 'org.zstack.header.identity.SessionInventory' });
    }
    const bad = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: 'nope' } });
    expect(bad.status).toBe(401);
    expect(bad.body.error.code).toBe('ID.1000');
  });

  it.each([
    ['no header', {}],
    ['garbage', { Authorization: 'OAuth not-a-session' }],
    ['wrong scheme', { Authorization: 'Bearer abc' }],
  ])('401 without a valid session (%s), on every API', async (_n, headers) => {
    const t = await ctl();
    for (const [m, p] of [['get', '/zstack/v1/hosts'], ['post', '/zstack/v1/zones'], ['get', '/zstack/v1/nothing-here'], ['get', '/zstack/v1/global-configurations']] as const) {
      const r = await request(t.app)[m](p).set(headers as Record<string, string>);
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe('ID.1001');
    }
  });

  it('sessions expire (2 hours) and can be ended by LogOut', async () => {
    const t = await ctl();
    expect((await request(t.app).get('/zstack/v1/zones').set(t.auth)).status).toBe(200);
    t.clock.advance(2 * 3600 * 1000 - 1000);
    expect((await request(t.app).get('/zstack/v1/zones').set(t.auth)).status).toBe(200);
    t.clock.advance(1000);
    expect((await request(t.app).get('/zstack/v1/zones').set(t.auth)).status).toBe(401);
    const r = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
    const auth = { Authorization: `OAuth ${r.body.inventory.uuid}` };
    expect((await request(t.app).delete(`/zstack/v1/accounts/sessions/${r.body.inventory.uuid}`).set(auth)).status).toBe(200);
    expect((await request(t.app).get('/zstack/v1/zones').set(auth)).status).toBe(401);
  });

  it('expired sessions and bootstrap tokens are swept away on the housekeeping timer', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    await request(t.app).post('/zstack/v1/hosts/bootstrap-tokens').set(t.auth).send({ params: { clusterUuid: cluster.uuid, ttlSeconds: 600 } });
    expect(await t.core.repo.all('session')).toHaveLength(1);
    expect(await t.core.repo.all('bootstrapToken')).toHaveLength(1);
    // Each sweep schedules the next when it ends: jump past expiry, let that sweep finish, then
    // move to the next tick, which finds both expired.
    t.clock.advance(2 * 3600 * 1000);
    for (let i = 0; i < 50 && t.clock.pending === 0; i++) await new Promise((r) => setTimeout(r, 5));
    t.clock.advance(10 * 60 * 1000);
    for (let i = 0; i < 50 && (await t.core.repo.all('session')).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(await t.core.repo.all('session')).toHaveLength(0);
    expect(await t.core.repo.all('bootstrapToken')).toHaveLength(0);
  });

  it('generates the admin password on first start: file mode 0600, announced once, never stored in clear', async () => {
    const dir = await tempDir();
    const lines: string[] = [];
    const core = await openCore({ dataDir: dir, log: silentLog(), sync: false, announce: (l) => lines.push(l) });
    await core.close();
    const file = join(dir, 'admin-password');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const pw = (await readFile(file, 'utf8')).trim();
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(pw);
    const core2 = await openCore({ dataDir: dir, log: silentLog(), sync: false, announce: (l) => lines.push(l) });
    expect(lines).toHaveLength(1);
    await core2.auth.login('admin', pw);
    await core2.close();
    for (const f of await filesUnder(dir)) if (!f.endsWith('admin-password')) expect(await readFile(f, 'utf8')).not.toContain(pw);
  });
});

describe('zones, clusters, hosts', () => {
  it('have exactly the contract inventory fields, ZStack dates and uuids, and schema class names', async () => {
    const t = await ctl();
    const { zone, cluster } = await world(t);
    expect(Object.keys(zone).sort()).toEqual(['createDate', 'description', 'isDefault', 'lastOpDate', 'name', 'state', 'type', 'uuid']);
    expect(Object.keys(cluster).sort()).toEqual(['architecture', 'createDate', 'description', 'hypervisorType', 'lastOpDate', 'name', 'state', 'type', 'uuid', 'zoneUuid']);
    const host = await makeHost(t, cluster.uuid, { description: 'rack 4' });
    expect(Object.keys(host).sort()).toEqual([
      'architecture', 'availableCpuCapacity', 'availableMemoryCapacity', 'availablePhysicalMemory', 'clusterUuid', 'cpuNum', 'cpuSockets',
      'createDate', 'description', 'hypervisorType', 'lastOpDate', 'managementIp', 'name', 'osDistribution', 'osRelease', 'osVersion',
      'sshPort', 'state', 'status', 'totalCpuCapacity', 'totalMemoryCapacity', 'totalPhysicalMemory', 'username', 'uuid', 'zoneUuid',
    ]);
    for (const inv of [zone, cluster, host]) {
      expect(inv.uuid).toMatch(/^[0-9a-f]{32}$/);
      expect(inv.createDate).toMatch(ZSTACK_DATE);
      expect(inv.lastOpDate).toMatch(ZSTACK_DATE);
    }
    expect(host.zoneUuid).toBe(zone.uuid);
    expect(host.hypervisorType).toBe('KVM');
    expect(host.state).toBe('Enabled');
    const q = await request(t.app).get(`/zstack/v1/hosts/${host.uuid}`).set(t.auth);
    expect(q.body.schema).toEqual({ 'inventories[0]': 'org.zstack.kvm.KVMHostInventory' });
  });

  it('honours resourceUuid, refuses a duplicate managementIp and lastOpDate follows changes', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const uuid = 'ab'.repeat(16);
    const host = await makeHost(t, cluster.uuid, { resourceUuid: uuid, managementIp: '192.168.7.7' });
    expect(host.uuid).toBe(uuid);
    const dup = await call(t, 'post', '/hosts/kvm', { params: { name: 'x', managementIp: '192.168.7.7', clusterUuid: cluster.uuid, username: 'root', password: 'p' } });
    expect(dup.status).toBe(503);
    expect(dup.body.error.details).toContain('192.168.7.7');
    t.clock.advance(60_000);
    const up = await call(t, 'put', `/hosts/${uuid}/actions`, { updateHost: { name: 'renamed', description: 'moved' } });
    expect(up.status).toBe(200);
    expect(up.body.inventory.name).toBe('renamed');
    expect(up.body.inventory.lastOpDate).not.toBe(host.lastOpDate);
    expect(up.body.inventory.createDate).toBe(host.createDate);
  });

  it.each([
    ['Permissive', 'zones'], ['Permissive', 'clusters'], ['Enforcing', 'zones'], ['Enforcing', 'clusters'],
  ] as const)('deleteMode=%s on %s with hosts', async (mode, what) => {
    const t = await ctl();
    const { zone, cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    await call(t, 'post', '/system-tags', { params: { resourceType: 'HostVO', resourceUuid: host.uuid, tag: 'reservedMemory::1G' } });
    const target = what === 'zones' ? zone.uuid : cluster.uuid;
    const r = await call(t, 'delete', `/${what}/${target}?deleteMode=${mode}`);
    if (mode === 'Permissive') {
      expect(r.status).toBe(503);
      expect(r.body.error.code).toBe('SYS.1004');
      expect(r.body.error.details).toMatch(/still has 1 hosts/);
      expect(await t.core.repo.get('host', host.uuid)).toBeDefined();
    } else {
      expect(r.status).toBe(200);
      expect(r.body).toEqual({});
      expect(await t.core.repo.get('host', host.uuid)).toBeUndefined();
      expect(await t.core.repo.get('cluster', cluster.uuid)).toBeUndefined();
      expect(await t.core.repo.find('tag', { resourceUuid: host.uuid })).toEqual([]);
    }
  });

  it('deletes an empty zone in Permissive mode and a host whenever', async () => {
    const t = await ctl();
    const { zone, cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    expect((await call(t, 'delete', `/hosts/${host.uuid}`)).status).toBe(200);
    expect((await call(t, 'delete', `/clusters/${cluster.uuid}`)).status).toBe(200);
    expect((await call(t, 'delete', `/zones/${zone.uuid}`)).status).toBe(200);
    expect((await call(t, 'get', `/zones/${zone.uuid}`)).status).toBe(404);
  });
});

describe('admin state machine through the API', () => {
  const change = (t: TestController, uuid: string, stateEvent: string) =>
    call(t, 'put', `/hosts/${uuid}/actions`, { changeHostState: { stateEvent } });

  it('enable/disable, and maintenance needs the host Connected (SYS.1006)', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    expect((await change(t, host.uuid, 'disable')).body.inventory.state).toBe('Disabled');
    expect((await change(t, host.uuid, 'enable')).body.inventory.state).toBe('Enabled');
    const r = await change(t, host.uuid, 'maintain');
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('SYS.1006');
    expect(r.body.error.details).toContain(`host[uuid:${host.uuid}`);
    expect(r.body.error.details).toContain('status:Disconnected');
  });

  it.each(['maintain', 'preMaintain'])('%s takes a Connected host with no VMs to Maintenance, step by step', async (word) => {
    const t = await ctl();
    const { cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    await setStatus(t, host.uuid, 'Connected');
    await change(t, host.uuid, 'disable');
    const r = await change(t, host.uuid, word);
    expect(r.status).toBe(200);
    expect(r.body.inventory.state).toBe('Maintenance');
    // Maintenance takes neither maintain nor preMaintain: the job fails naming host, state and event.
    const again = await change(t, host.uuid, word);
    expect(again.status).toBe(503);
    expect(again.body.error.code).toBe('SYS.1005');
    expect(again.body.error.details).toMatch(new RegExp(`host\\[uuid:${host.uuid}.*state:Maintenance.*event\\[${word}\\]`));
    expect((await change(t, host.uuid, 'enable')).body.inventory.state).toBe('Enabled');
  });

  it('refuses maintenance while VMs still run there, and rolls the state back', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    await setStatus(t, host.uuid, 'Connected');
    await change(t, host.uuid, 'disable');
    await t.core.repo.transaction((tx) => tx.insert('vm', {
      uuid: 'cd'.repeat(16), name: 'vm1', hostUuid: host.uuid, lastHostUuid: null, clusterUuid: cluster.uuid, zoneUuid: host.zoneUuid,
      state: 'Running', memorySize: 1, cpuNum: 1, vmNics: [], createDate: 0, lastOpDate: 0,
    }));
    const r = await change(t, host.uuid, 'maintain');
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('HOST.1001');
    expect(r.body.error.details).toContain('cd'.repeat(16));
    expect(((await t.core.repo.get('host', host.uuid)) as any).state).toBe('Disabled');
  });

  it('ReconnectHost of a host with no agent credentials is refused at once, saying why', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    const r = await call(t, 'put', `/hosts/${host.uuid}/actions`, { reconnectHost: {} });
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('SYS.1006');
    expect(r.body.error.details).toMatch(/no agent credentials/);
  });
});
// AddKVMHost's deployment flow (SSH, playbook, connect, rollback): test/api/add-host.test.ts.

describe('queries over HTTP', () => {
  it('finds the host running a VM by NIC IP, counts, pages, projects', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const hosts: any[] = [];
    for (let i = 0; i < 5; i++) hosts.push(await makeHost(t, cluster.uuid, { name: `kvm-${i}` }));
    await t.core.repo.transaction((tx) => tx.insert('vm', {
      uuid: 'ef'.repeat(16), name: 'web', hostUuid: hosts[3].uuid, lastHostUuid: null, clusterUuid: cluster.uuid, zoneUuid: hosts[3].zoneUuid,
      state: 'Running', memorySize: 1, cpuNum: 1, vmNics: [{ ip: '10.21.100.2', mac: 'fa:16:3e:00:00:01' }], createDate: 0, lastOpDate: 0,
    }));
    const byIp = await request(t.app).get('/zstack/v1/hosts').query('q=vmInstance.vmNics.ip=10.21.100.2').set(t.auth);
    expect(byIp.body.inventories.map((h: any) => h.uuid)).toEqual([hosts[3].uuid]);
    const count = await request(t.app).get('/zstack/v1/hosts?q=name~=kvm-%25&count=true').set(t.auth);
    expect(count.body).toEqual({ total: 5 });
    const page = await request(t.app).get('/zstack/v1/hosts?q=name~=kvm-%25&limit=2&start=1&replyWithCount=true&sort=-name&fields=uuid,name').set(t.auth);
    expect(page.body.total).toBe(5);
    expect(page.body.inventories).toEqual([{ uuid: hosts[3].uuid, name: 'kvm-3' }, { uuid: hosts[2].uuid, name: 'kvm-2' }]);
    expect(page.body.schema).toEqual({ 'inventories[0]': 'org.zstack.kvm.KVMHostInventory', 'inventories[1]': 'org.zstack.kvm.KVMHostInventory' });
    const nested = await request(t.app).get(`/zstack/v1/hosts?q=cluster.name=cluster1&q=zone.uuid=${hosts[0].zoneUuid}&count=true`).set(t.auth);
    expect(nested.body.total).toBe(5);
    const vms = await request(t.app).get('/zstack/v1/vm-instances?q=vmNics.ip=10.21.100.2').set(t.auth);
    expect(vms.body.inventories[0].vmNics).toEqual([{ ip: '10.21.100.2', mac: 'fa:16:3e:00:00:01' }]);
    expect(vms.body.schema['inventories[0]']).toBe('org.zstack.header.vm.VmInstanceInventory');
  });

  it('accepts ZStack and ISO dates in conditions', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    await makeHost(t, cluster.uuid);
    t.clock.advance(3600_000);
    await makeHost(t, cluster.uuid);
    const cut = new Date(t.clock.now() - 1800_000);
    for (const v of [cut.toISOString(), 'Jan 1, 2026 12:30:00 PM']) {
      const r = await request(t.app).get('/zstack/v1/hosts').query({ q: `createDate>${v}`, count: 'true' }).set(t.auth);
      expect(r.body.total).toBe(1);
    }
  });
});

describe('global configurations', () => {
  it('lists all fifteen with defaults and descriptions', async () => {
    const t = await ctl();
    const r = await request(t.app).get('/zstack/v1/global-configurations').set(t.auth);
    expect(r.body.inventories).toHaveLength(15);
    expect(r.body.schema['inventories[0]']).toBe('org.zstack.core.config.GlobalConfigInventory');
    const got = Object.fromEntries(r.body.inventories.map((c: any) => [`${c.category}/${c.name}`, c]));
    const expected: Record<string, string> = {
      'host/load.all': 'true', 'host/load.parallelismDegree': '100', 'host/ping.interval': '60', 'host/ping.timeout': '10',
      'host/ping.parallelismDegree': '100', 'host/cpu.overProvisioning.ratio': '10', 'host/connection.autoReconnectOnError': 'true', 'host/maintenanceMode.ignoreError': 'false',
      'hostAllocator/reservedCapacity.zoneLevel': 'true', 'hostAllocator/reservedCapacity.clusterLevel': 'true',
      'hostAllocator/reservedCapacity.hostLevel': 'true', 'kvm/vm.migrationQuantity': '2', 'kvm/reservedMemory': '512M',
      'kvm/dataVolume.maxNum': '24', 'kvm/host.syncLevel': '10',
    };
    for (const [k, v] of Object.entries(expected)) {
      expect(got[k].value).toBe(v);
      expect(got[k].defaultValue).toBe(v);
      expect(got[k].description.length).toBeGreaterThan(10);
    }
  });

  it('an update is announced to listeners at once and survives a restart', async () => {
    const dir = await tempDir();
    const t = await makeController({ dir });
    const seen: string[] = [];
    t.core.configs.onChange('host', 'ping.interval', (v, old) => seen.push(`${old}->${v}`));
    const r = await call(t, 'put', '/global-configurations/host/ping.interval/actions', { updateGlobalConfig: { value: '30' } });
    expect(r.status).toBe(200);
    expect(r.body.inventory).toMatchObject({ category: 'host', name: 'ping.interval', value: '30', defaultValue: '60' });
    expect(seen).toEqual(['60->30']);
    expect(t.core.configs.getInt('host', 'ping.interval')).toBe(30);
    await t.close();
    const t2 = await ctl({ dir });
    expect(t2.core.configs.getInt('host', 'ping.interval')).toBe(30);
    const q = await request(t2.app).get('/zstack/v1/global-configurations?q=name=ping.interval').set(t2.auth);
    expect(q.body.inventories[0].value).toBe('30');
  });

  it.each(CONFIG_DEFS.map((d) => [d.category, d.name, d.defaultValue] as const))('%s/%s accepts its default back', async (c, n, v) => {
    const t = await ctl();
    expect((await call(t, 'put', `/global-configurations/${c}/${n}/actions`, { updateGlobalConfig: { value: v } })).status).toBe(200);
  });
});

describe('tags and reserved memory', () => {
  it('user tags go on any resource; system tags are checked; inherent tags cannot be deleted', async () => {
    const t = await ctl();
    const { zone, cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    for (const [type, uuid] of [['ZoneVO', zone.uuid], ['ClusterVO', cluster.uuid], ['HostVO', host.uuid]]) {
      const r = await call(t, 'post', '/user-tags', { params: { resourceType: type, resourceUuid: uuid, tag: 'largeMemoryHost' } });
      expect(r.status).toBe(200);
      expect(r.body.inventory).toMatchObject({ type: 'User', inherent: false, tag: 'largeMemoryHost', resourceUuid: uuid });
      expect(r.body.schema.inventory).toBe('org.zstack.header.tag.UserTagInventory');
    }
    const sys = await call(t, 'post', '/system-tags', { params: { resourceType: 'ClusterVO', resourceUuid: cluster.uuid, tag: 'host::reservedMemory::2G' } });
    expect(sys.status).toBe(200);
    expect(sys.body.schema.inventory).toBe('org.zstack.header.tag.SystemTagInventory');
    const second = await call(t, 'post', '/system-tags', { params: { resourceType: 'ClusterVO', resourceUuid: cluster.uuid, tag: 'host::reservedMemory::3G' } });
    expect(second.status).toBe(503);
    const upd = await call(t, 'put', `/system-tags/${sys.body.inventory.uuid}/actions`, { updateSystemTag: { tag: 'host::reservedMemory::3G' } });
    expect(upd.body.inventory.tag).toBe('host::reservedMemory::3G');

    await t.core.repo.transaction((tx) => syncInherentTags(tx, host.uuid, ['os::distribution::Debian', 'hvm::vmx'], t.clock.now()));
    const list = await request(t.app).get(`/zstack/v1/system-tags?q=resourceUuid=${host.uuid}`).set(t.auth);
    const inherent = list.body.inventories.filter((x: any) => x.inherent);
    expect(inherent.map((x: any) => x.tag).sort()).toEqual(['hvm::vmx', 'os::distribution::Debian']);
    const del = await call(t, 'delete', `/tags/${inherent[0].uuid}`);
    expect(del.status).toBe(503);
    // A stale metadata tag goes on the next sync.
    await t.core.repo.transaction((tx) => syncInherentTags(tx, host.uuid, ['os::distribution::Debian'], t.clock.now()));
    const after = await request(t.app).get(`/zstack/v1/system-tags?q=resourceUuid=${host.uuid}&q=inherent=true`).set(t.auth);
    expect(after.body.inventories.map((x: any) => x.tag)).toEqual(['os::distribution::Debian']);
    // User tags are deletable and are not listed as system tags.
    const userTags = await request(t.app).get(`/zstack/v1/user-tags?q=resourceUuid=${host.uuid}`).set(t.auth);
    expect((await call(t, 'delete', `/tags/${userTags.body.inventories[0].uuid}`)).status).toBe(200);
    expect((await request(t.app).get(`/zstack/v1/system-tags/${userTags.body.inventories[0].uuid}`).set(t.auth)).status).toBe(404);
  });

  // [tags on host/cluster/zone, level switches off, expected bytes, source]
  const G = 2 ** 30;
  const M = 2 ** 20;
  it.each([
    [{}, [], 512 * M, 'global'],
    [{ zone: '1G' }, [], G, 'zone'],
    [{ zone: '1G', cluster: '2G' }, [], 2 * G, 'cluster'],
    [{ zone: '1G', cluster: '2G', host: '3G' }, [], 3 * G, 'host'],
    [{ zone: '1G', cluster: '2G', host: '3G' }, ['hostLevel'], 2 * G, 'cluster'],
    [{ zone: '1G', cluster: '2G', host: '3G' }, ['hostLevel', 'clusterLevel'], G, 'zone'],
    [{ zone: '1G', cluster: '2G', host: '3G' }, ['hostLevel', 'clusterLevel', 'zoneLevel'], 512 * M, 'global'],
    [{ host: '0' }, [], 0, 'host'],
    [{ zone: '1G', host: '3G' }, ['zoneLevel'], 3 * G, 'host'],
  ] as const)('reserved memory %j with %j off -> %i (%s)', async (tags, off, bytes, source) => {
    const t = await ctl();
    const { zone, cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid);
    const put = (resourceType: string, resourceUuid: string, tag: string) =>
      call(t, 'post', '/system-tags', { params: { resourceType, resourceUuid, tag } });
    if ('zone' in tags) await put('ZoneVO', zone.uuid, `host::reservedMemory::${tags.zone}`);
    if ('cluster' in tags) await put('ClusterVO', cluster.uuid, `host::reservedMemory::${tags.cluster}`);
    if ('host' in tags) await put('HostVO', host.uuid, `reservedMemory::${tags.host}`);
    for (const level of off) {
      await call(t, 'put', `/global-configurations/hostAllocator/reservedCapacity.${level}/actions`, { updateGlobalConfig: { value: 'false' } });
    }
    const row: any = await t.core.repo.get('host', host.uuid);
    expect(await resolveReservedMemory(t.core.repo, t.core.configs, row)).toEqual({ bytes, source });
  });

  it('global reservedMemory change is seen by the resolver at once', async () => {
    const t = await ctl();
    const { cluster } = await world(t);
    const host: any = await t.core.repo.get('host', (await makeHost(t, cluster.uuid)).uuid);
    await call(t, 'put', '/global-configurations/kvm/reservedMemory/actions', { updateGlobalConfig: { value: '2G' } });
    expect((await resolveReservedMemory(t.core.repo, t.core.configs, host)).bytes).toBe(2 * 2 ** 30);
  });
});

describe('jobs', () => {
  it('uses X-Job-UUID as the job id; a reused one is a 400; the job answers with the result', async () => {
    const t = await ctl();
    const id = '12'.repeat(16);
    const r = await request(t.app).post('/zstack/v1/zones').set(t.auth).set('X-Job-UUID', id).send({ params: { name: 'z' } });
    expect(r.status).toBe(202);
    expect(r.body.location).toMatch(new RegExp(`^http://.*/zstack/v1/api-jobs/${id}$`));
    const again = await request(t.app).post('/zstack/v1/zones').set(t.auth).set('X-Job-UUID', id).send({ params: { name: 'z2' } });
    expect(again.status).toBe(400);
    const job = await request(t.app).get(`/zstack/v1/api-jobs/${id}`).set(t.auth);
    expect(job.status).toBe(200);
    expect(job.body.inventory.name).toBe('z');
  });

  it('expires finished jobs after three hours (404)', async () => {
    const t = await ctl();
    const r = await request(t.app).post('/zstack/v1/zones').set(t.auth).send({ params: { name: 'z' } });
    const path = new URL(r.body.location).pathname;
    t.clock.advance(3 * 3600 * 1000 - 1);
    // Sessions last two hours: log in again to look.
    const login = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
    const auth = { Authorization: `OAuth ${login.body.inventory.uuid}` };
    expect((await request(t.app).get(path).set(auth)).status).toBe(200);
    t.clock.advance(2);
    const gone = await request(t.app).get(path).set(auth);
    expect(gone.status).toBe(404);
    expect(await t.core.jobs.sweep()).toBe(1);
  });

  it('marks a job cut by a restart as failed, never leaves it running', async () => {
    const dir = await tempDir();
    const t = await makeController({ dir });
    await t.core.repo.transaction((tx) => tx.insert('job', { uuid: '34'.repeat(16), apiName: 'AddKVMHost', status: 'Running', createDate: t.clock.now(), lastOpDate: t.clock.now() }));
    await t.core.repo.close(); // as if killed: no graceful job drain
    const t2 = await ctl({ dir });
    const r = await request(t2.app).get(`/zstack/v1/api-jobs/${'34'.repeat(16)}`).set(t2.auth);
    expect(r.status).toBe(503);
    expect(r.body.error.details).toMatch(/cut by a controller restart/);
  });

  it('POSTs the result to X-Web-Hook', async () => {
    const t = await ctl();
    const got: any[] = [];
    const hook = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        got.push({ job: req.headers['x-job-uuid'], body: JSON.parse(b) });
        res.end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook`;
    const r = await request(t.app).post('/zstack/v1/zones').set(t.auth).set('X-Web-Hook', url).send({ params: { name: 'hooked' } });
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((res) => setTimeout(res, 10));
    hook.close();
    expect(got[0].body.inventory.name).toBe('hooked');
    expect(r.body.location).toContain(got[0].job);
  });
});

describe('logs', () => {
  it('one line per API call and one per state change, never the password', async () => {
    const lines: any[] = [];
    const sink = new Writable({ write(chunk, _e, cb) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); cb(); } });
    const t = await ctl({ log: pino({ level: 'info' }, sink) });
    const { cluster } = await world(t);
    const host = await makeHost(t, cluster.uuid, { password: 'TopSecretPw' });
    lines.length = 0;
    await call(t, 'put', `/hosts/${host.uuid}/actions`, { changeHostState: { stateEvent: 'disable' } });
    const api = lines.filter((l) => l.msg === 'api');
    expect(api.map((l) => [l.method, l.path, l.status])).toEqual([
      ['PUT', `/zstack/v1/hosts/${host.uuid}/actions`, 202], ['GET', expect.stringMatching(/^\/zstack\/v1\/api-jobs\//), 200],
    ]);
    expect(lines.filter((l) => l.msg === 'host state changed')).toEqual([expect.objectContaining({ host: host.uuid, from: 'Enabled', to: 'Disabled' })]);
    expect(JSON.stringify(lines)).not.toContain('TopSecretPw');
  });
});

void RESOURCES;
void finish;
