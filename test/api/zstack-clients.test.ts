/**
 * What ZStack's own clients expect (its Java SDK's AbstractAction/ZSClient and RestServer):
 * every asynchronous API answers 202 and a refusal arrives through the job as 503 with the
 * code; LogOut without an Authorization header; the full inventories; host names as
 * managementIp resolved before the job works.
 */
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyHostFacts } from '../../controller/services/facts.ts';
import { FACTS } from '../fakes/agent.ts';
import { ADMIN_PASSWORD, makeCluster, makeController, makeHost, makeZone, refused, type TestController } from '../helpers.ts';

let t: TestController;
let fx: Record<string, string>;

beforeAll(async () => {
  t = await makeController();
  const zone = await makeZone(t, 'z1');
  const cluster = await makeCluster(t, zone.uuid, 'c1');
  const host = await makeHost(t, cluster.uuid);
  fx = { zone: zone.uuid, cluster: cluster.uuid, host: host.uuid, unknown: 'f'.repeat(32) };
});
afterAll(async () => t?.close());

const fill = (s: string) => s.replace(/\{(\w+)\}/g, (_, k: string) => fx[k]!);

describe('every asynchronous API: bad input -> 202, then the job answers 503 with the code', () => {
  it.each([
    ['CreateZone', 'post', '/zones', { params: { name: '' } }, 'SYS.1007', /params.name/],
    ['CreateCluster', 'post', '/clusters', { params: { zoneUuid: '{unknown}', name: 'c', hypervisorType: 'KVM' } }, 'SYS.1007', /zone\[uuid:f+\] does not exist/],
    ['AddKVMHost', 'post', '/hosts/kvm', { params: { name: 'h', managementIp: '10.0.0.300', clusterUuid: '{cluster}', username: 'root', password: 'p' } }, 'SYS.1007', /managementIp/],
    ['AddKVMHost (a name that does not resolve)', 'post', '/hosts/kvm', { params: { name: 'h', managementIp: 'no-such-host.invalid', clusterUuid: '{cluster}', username: 'root', password: 'p' } }, 'SYS.1007', /no-such-host\.invalid\] does not resolve/],
    ['ChangeHostState (not Connected)', 'put', '/hosts/{host}/actions', { changeHostState: { stateEvent: 'maintain' } }, 'SYS.1006', /not Connected/],
    ['UpdateHost', 'put', '/hosts/{host}/actions', { updateHost: { name: 7 } }, 'SYS.1007', /updateHost.name/],
    ['ReconnectHost (no credentials)', 'put', '/hosts/{host}/actions', { reconnectHost: {} }, 'SYS.1006', /no agent credentials/],
    ['DeleteHost (unknown)', 'delete', '/hosts/{unknown}', undefined, 'SYS.1007', /does not exist/],
    ['DeleteZone (Permissive with hosts)', 'delete', '/zones/{zone}', undefined, 'SYS.1004', /still has 1 hosts/],
    ['DeleteCluster (bad deleteMode)', 'delete', '/clusters/{cluster}?deleteMode=Sometimes', undefined, 'SYS.1007', /deleteMode/],
    ['UpdateGlobalConfig', 'put', '/global-configurations/kvm/vm.migrationQuantity/actions', { updateGlobalConfig: { value: '0' } }, 'SYS.1007', /vm.migrationQuantity/],
    ['CreateSystemTag', 'post', '/system-tags', { params: { resourceType: 'HostVO', resourceUuid: '{host}', tag: 'bogus::tag' } }, 'SYS.1007', /not a known system tag/],
    ['CreateUserTag', 'post', '/user-tags', { params: { resourceType: 'HostVO', resourceUuid: '{unknown}', tag: 'x' } }, 'SYS.1007', /does not exist/],
    ['UpdateSystemTag', 'put', '/system-tags/{unknown}/actions', { updateSystemTag: { tag: 'reservedMemory::1G' } }, 'SYS.1007', /does not exist/],
    ['DeleteTag', 'delete', '/tags/{unknown}', undefined, 'SYS.1007', /does not exist/],
    ['CreateVmInstance', 'post', '/vm-instances', { params: { name: 'v', memorySize: 1, cpuNum: 1 } }, 'SYS.1007', /memorySize/],
    ['CreateVmInstance (no host fits)', 'post', '/vm-instances', { params: { name: 'v', memorySize: 1024 ** 3, cpuNum: 1, clusterUuid: '{cluster}' } }, 'HOST_ALLOCATION.1000', /is not Connected/],
    ['StartVmInstance', 'put', '/vm-instances/{unknown}/actions', { startVmInstance: {} }, 'SYS.1007', /vm\[uuid:f+\] does not exist/],
    ['StopVmInstance', 'put', '/vm-instances/{unknown}/actions', { stopVmInstance: { type: 'warm' } }, 'SYS.1007', /stopVmInstance.type/],
    ['RebootVmInstance', 'put', '/vm-instances/{unknown}/actions', { rebootVmInstance: {} }, 'SYS.1007', /does not exist/],
    ['MigrateVm', 'put', '/vm-instances/{unknown}/actions', { migrateVm: { hostUuid: 'x' } }, 'SYS.1007', /migrateVm.hostUuid/],
    ['DestroyVmInstance', 'delete', '/vm-instances/{unknown}', undefined, 'SYS.1007', /does not exist/],
  ] as const)('%s', async (_name, method, path, body, code, details) => {
    let req = request(t.app)[method](`/zstack/v1${fill(path)}`).set(t.auth);
    if (body) req = req.send(JSON.parse(fill(JSON.stringify(body))));
    const first = await req;
    expect(first.status, first.text).toBe(202);
    const job = await refused(t, first);
    expect(job.status).toBe(503);
    expect(job.body.error.code).toBe(code);
    expect(job.body.error.details).toMatch(details);
  });

  it('malformed JSON and a missing session are still refused at once', async () => {
    expect((await request(t.app).post('/zstack/v1/zones').set(t.auth).set('content-type', 'application/json').send('{')).status).toBe(400);
    expect((await request(t.app).post('/zstack/v1/zones').send({ params: { name: 'z' } })).status).toBe(401);
  });
});

describe('LogOut', () => {
  it('takes the session in the path, without an Authorization header', async () => {
    const login = await request(t.app).put('/zstack/v1/accounts/login').send({ logInByAccount: { accountName: 'admin', password: ADMIN_PASSWORD } });
    const s = login.body.inventory.uuid;
    const out = await request(t.app).delete(`/zstack/v1/accounts/sessions/${s}`);
    expect(out.status).toBe(200);
    expect(out.body).toEqual({});
    expect((await request(t.app).get('/zstack/v1/zones').set('Authorization', `OAuth ${s}`)).status).toBe(401);
  });
});

describe('inventories as the SDK reads them', () => {
  it('zones carry type and isDefault, clusters type and architecture', async () => {
    const z = (await request(t.app).get(`/zstack/v1/zones/${fx.zone}`).set(t.auth)).body.inventories[0];
    expect(z).toMatchObject({ type: 'zstack', isDefault: true });
    const c = (await request(t.app).get(`/zstack/v1/clusters/${fx.cluster}`).set(t.auth)).body.inventories[0];
    expect(c).toMatchObject({ type: 'zstack', architecture: null });
  });

  it('hosts carry the OS fields from their facts, sshPort and username, never the password', async () => {
    await t.core.repo.transaction((tx) => applyHostFacts(tx, fx.host!, { ...FACTS, architecture: 'x86_64' }, t.clock.now()));
    const r = await request(t.app).get(`/zstack/v1/hosts/${fx.host}`).set(t.auth);
    const h = r.body.inventories[0];
    expect(h).toMatchObject({ osDistribution: 'debian', osRelease: 'bookworm', osVersion: '12', architecture: 'x86_64', sshPort: 22 });
    expect('username' in h).toBe(true);
    expect(JSON.stringify(r.body)).not.toMatch(/password/i);
    expect((await request(t.app).get(`/zstack/v1/clusters/${fx.cluster}`).set(t.auth)).body.inventories[0].architecture).toBe('x86_64');
    const q = await request(t.app).get('/zstack/v1/hosts?q=osDistribution=debian').set(t.auth);
    expect(q.body.inventories.map((x: any) => x.uuid)).toEqual([fx.host]);
  });
});
