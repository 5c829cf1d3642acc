/**
 * `npx tsx bench/kvm.bench.ts`: real KVM hosts on this machine (test hosts with their own
 * libvirtd, test/hosts/kvm.ts), through the REST API. Prints:
 * - AddKVMHost on a bare host (the playbook installs QEMU + libvirt from the local .deb cache:
 *   no download), on a host that has the packages, and a second deploy (changed=0);
 * - live migration of an idle 64 MiB guest between two hosts, BENCH_MIGRATIONS times (10)
 *   back and forth: median, min, max of the MigrateVm job (REST to answer) and libvirt's own
 *   figures for the last one (`virsh domjobinfo --completed`);
 * - maintenance of a host with 4 real guests, vm.migrationQuantity 2.
 * Guests run under KVM when /dev/kvm works, else TCG (said in the output). Needs root and
 * what `npm test` provisions (test/provision/kvm.sh).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startController } from '../controller/server.ts';
import { kvmSupport } from '../test/hosts/kvm.ts';
import { createTestHosts, type TestHost, testHostsSupport } from '../test/hosts/testhosts.ts';
import { intEnv, log, onExit } from './common.ts';
import { Client } from './http.ts';
import { median } from './stats.ts';

const MIGRATIONS = intEnv('BENCH_MIGRATIONS', 10, 1);
const PASSWORD = 'bench-admin-password';
const MiB = 1024 ** 2;

const support = await testHostsSupport();
const kvm = support.ok ? await kvmSupport('bare') : support;
if (!kvm.ok) {
  log(`cannot run: ${kvm.why}`);
  process.exit(1);
}
log(`guests run under ${kvm.accel === 'kvm' ? 'KVM' : 'TCG (no usable /dev/kvm on this machine)'}`);

const dataDir = mkdtempSync(join(tmpdir(), 'hk-bench-kvm-'));
let hosts: TestHost[] = [];
onExit(() => rmSync(dataDir, { recursive: true, force: true }));

const c = await startController({
  dataDir, port: 0, host: '0.0.0.0', adminPassword: PASSWORD, log: pino({ level: 'silent' }), sync: true,
  deploy: { hypervisor: 'libvirt' },
});
try {
  const [bare, installed] = await Promise.all([
    createTestHosts(2, { prefix: 'hkk', first: 70, kvm: 'bare' }),
    createTestHosts(1, { prefix: 'hkl', first: 72, kvm: 'installed' }),
  ]);
  hosts = [...bare, ...installed];
  const client = new Client(c.port);
  const login = await client.request('PUT', '/zstack/v1/accounts/login', { logInByAccount: { accountName: 'admin', password: PASSWORD } });
  client.session = JSON.parse(login.body).inventory.uuid;
  const api = async (method: string, path: string, body?: unknown): Promise<any> => {
    let a = await client.request(method, `/zstack/v1${path}`, body);
    if (a.status === 202) {
      const job = new URL(JSON.parse(a.body).location).pathname;
      do {
        await new Promise((ok) => setTimeout(ok, 50));
        a = await client.request('GET', job);
      } while (a.status === 202);
    }
    const out = a.body ? JSON.parse(a.body) : {};
    if (out.error) throw new Error(`${method} ${path}: ${JSON.stringify(out.error)}`);
    return out;
  };
  const zone = await api('POST', '/zones', { params: { name: 'z' } });
  const clusterUuid = (await api('POST', '/clusters', { params: { zoneUuid: zone.inventory.uuid, name: 'c', hypervisorType: 'KVM' } })).inventory.uuid;
  await c.core.deployer.agentBundle();
  const add = async (h: TestHost) => {
    const t0 = performance.now();
    const r = await api('POST', '/hosts/kvm', { params: { name: h.name, managementIp: h.ip, clusterUuid, username: 'root', password: h.rootPassword } });
    return { ms: performance.now() - t0, uuid: r.inventory.uuid as string };
  };

  // One at a time, so each figure is that host's alone.
  const a1 = await add(bare[0]!);
  log(`AddKVMHost, bare host (installs ${'libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils'} + deps from the local cache, starts libvirtd): ${(a1.ms / 1000).toFixed(1)} s`);
  const a3 = await add(installed[0]!);
  log(`AddKVMHost, host with the packages (starts libvirtd: first QEMU probe): ${(a3.ms / 1000).toFixed(1)} s`);
  const row = (await c.core.repo.get<any>('host', a1.uuid))!;
  const t2 = performance.now();
  const again = await c.core.hosts.queue.run(a1.uuid, () => c.core.deployer.playbook(row));
  log(`second deploy of the bare host: ${((performance.now() - t2) / 1000).toFixed(1)} s, changed=${again.changed}`);
  const a2 = await add(bare[1]!);
  log(`AddKVMHost, second bare host: ${(a2.ms / 1000).toFixed(1)} s`);

  const vm = (await api('POST', '/vm-instances', { params: { name: 'mig', memorySize: 64 * MiB, cpuNum: 1, hostUuid: a1.uuid } })).inventory.uuid as string;
  const times: number[] = [];
  for (let i = 0; i < MIGRATIONS; i++) {
    const to = i % 2 === 0 ? a2.uuid : a1.uuid;
    const t0 = performance.now();
    await api('PUT', `/vm-instances/${vm}/actions`, { migrateVm: { hostUuid: to } });
    times.push(performance.now() - t0);
  }
  const last = MIGRATIONS % 2 === 1 ? bare[1]! : bare[0]!;
  const info = (await last.exec(`virsh -c qemu:///system domjobinfo --completed ${vm} | grep -E 'Time elapsed:|Total downtime:'`)).stdout.trim().replace(/\s+/g, ' ');
  log(`live migration of an idle 64 MiB guest (MigrateVm, REST to answer), ${MIGRATIONS} runs: median ${(median(times) / 1000).toFixed(2)} s, min ${(Math.min(...times) / 1000).toFixed(2)} s, max ${(Math.max(...times) / 1000).toFixed(2)} s; libvirt, last run: ${info}`);

  // Maintenance: 4 guests on host 1 (the migrated one is moved back there first if needed).
  const loc = (await c.core.repo.get<any>('vm', vm))!.hostUuid;
  if (loc !== a1.uuid) await api('PUT', `/vm-instances/${vm}/actions`, { migrateVm: { hostUuid: a1.uuid } });
  for (let i = 0; i < 3; i++) await api('POST', '/vm-instances', { params: { name: `m${i}`, memorySize: 64 * MiB, cpuNum: 1, hostUuid: a1.uuid } });
  await api('PUT', '/global-configurations/kvm/vm.migrationQuantity/actions', { updateGlobalConfig: { value: '2' } });
  const t3 = performance.now();
  await api('PUT', `/hosts/${a1.uuid}/actions`, { changeHostState: { stateEvent: 'maintain' } });
  log(`maintenance of a host with 4 guests (vm.migrationQuantity 2): ${((performance.now() - t3) / 1000).toFixed(1)} s`);
} finally {
  await c.close();
  await Promise.all(hosts.map((h) => h.destroy()));
}
