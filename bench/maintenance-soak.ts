/**
 * `npm run soak:maintenance`: kill -9 the controller at random moments of maintenances, again
 * and again, and count VMs lost or running twice (not in the test suite: it takes minutes).
 *
 * A controller process and a simulated fleet (BENCH_SOAK_HOSTS, 4) in another process, every
 * migration BENCH_SOAK_MIGRATE_MS (100) long. Each round puts the next host into maintenance
 * (with the VMs it holds, topped up to BENCH_SOAK_VMS, 10), kills the controller after a random
 * 0-1.5 s, starts it again, waits for the job, audits every VM against the simulated hosts' own
 * files, then enables the host again. BENCH_SOAK_KILLS (50) rounds; prints the counts.
 */
import { tempDir } from '../test/helpers.ts';
import { CrashHarness } from '../test/integration/crash-harness.ts';
import { intEnv, log } from './common.ts';

const KILLS = intEnv('BENCH_SOAK_KILLS', 50, 1);
const HOSTS = intEnv('BENCH_SOAK_HOSTS', 4, 2);
const VMS = intEnv('BENCH_SOAK_VMS', 10, 1);
const MIGRATE_MS = intEnv('BENCH_SOAK_MIGRATE_MS', 100);
const SEED = intEnv('BENCH_SOAK_SEED', 1);

let state = SEED >>> 0;
const rnd = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);

const h = new CrashHarness({ dataDir: await tempDir('hk-soak-'), fleetDir: await tempDir('hk-soak-fleet-'), hosts: HOSTS, firstIp: '127.9.0.1', migrateMs: MIGRATE_MS });
process.on('exit', () => void h.stop());
await h.startController();
const hosts = await h.startFleet();
await h.ok('PUT', '/global-configurations/kvm/vm.migrationQuantity/actions', { updateGlobalConfig: { value: '2' } });
let created = 0;
let lost = 0;
let doubled = 0;
let disagree = 0;
let failedJobs = 0;
const t0 = Date.now();
for (let round = 0; round < KILLS; round++) {
  const host = hosts[round % HOSTS]!;
  const on = ((await h.api('GET', `/vm-instances?q=hostUuid=${host}&limit=1000`)).body.inventories ?? []).length;
  if (on < VMS) {
    await h.createVms(host, VMS - on, `s${round}`);
    created += VMS - on;
  }
  const first = await h.api('PUT', `/hosts/${host}/actions`, { changeHostState: { stateEvent: 'maintain' } });
  const killAt = Math.floor(rnd() * 1500);
  await new Promise((ok) => setTimeout(ok, killAt));
  await h.kill9();
  await h.startController();
  const done = await h.job(first.body.location, 180_000);
  if (done.status !== 200) failedJobs++;
  const a = await h.audit(created);
  lost += a.lost.length;
  doubled += a.doubled.length;
  disagree += a.disagree.length;
  log(`round ${round + 1}/${KILLS}: killed after ${killAt} ms; job ${done.status}; ${a.vms} VMs, lost ${a.lost.length}, doubled ${a.doubled.length}, controller disagrees on ${a.disagree.length}${a.lost.length + a.doubled.length + a.disagree.length ? ` ${JSON.stringify(a)}` : ''}`);
  await h.ok('PUT', `/hosts/${host}/actions`, { changeHostState: { stateEvent: 'enable' } });
  for (const end = Date.now() + 30_000; (await h.api('GET', `/hosts/${host}`)).body.inventories?.[0]?.status !== 'Connected' && Date.now() < end;) {
    await new Promise((ok) => setTimeout(ok, 50));
  }
}
log('');
log(`kill -9 of the controller during maintenance: ${KILLS} kills in ${((Date.now() - t0) / 1000).toFixed(0)} s, ${created} VMs`);
log(`VMs lost: ${lost}   VMs running twice: ${doubled}   controller and hosts disagreeing: ${disagree}   maintenance jobs not 200: ${failedJobs}`);
await h.stop();
process.exit(lost + doubled + disagree > 0 ? 1 : 0);
