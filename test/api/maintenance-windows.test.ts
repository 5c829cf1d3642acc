/**
 * Maintenance windows on the injected clock: validation through the job, a firing puts the
 * hosts into maintenance and the end enables them again (unless an admin changed them), a
 * restart catches up (late start within the duration, else a recorded miss), listing and
 * deleting. Hosts are Connected without agents and hold no VMs, so maintenance is quick.
 */
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import type { HostRow, MaintenanceWindowRow } from '../../protocol/resources.ts';
import { MaintenanceWindows } from '../../controller/flows/maintenance-windows.ts';
import { FakeClock } from '../fakes/clock.ts';
import { call, makeCluster, makeController, makeHost, makeZone, refused, setStatus, type TestController } from '../helpers.ts';

const MIN = 60_000;
const open: TestController[] = [];
afterEach(async () => {
  for (const t of open.splice(0)) await t.close();
});

/** Lets queued promises (timer arming, jobs) run, then moves the fake clock. */
async function advance(t: TestController, ms: number) {
  await new Promise((r) => setImmediate(r));
  t.clock.advance(ms);
  await t.core.windows.tick();
  // The timer's own tick may have won the firing (it runs once): wait for it too.
  await t.core.windows.idle();
  await t.core.jobs.drain();
}

async function setup(dir?: string, clock = new FakeClock(Date.UTC(2026, 0, 1, 0, 30))) {
  const t = await makeController({ clock, dir });
  open.push(t);
  const zone = await makeZone(t);
  const cluster = await makeCluster(t, zone.uuid);
  const hosts = [await makeHost(t, cluster.uuid), await makeHost(t, cluster.uuid)];
  for (const h of hosts) await setStatus(t, h.uuid, 'Connected');
  return { t, hosts };
}
const state = async (t: TestController, uuid: string) => (await t.core.repo.get<HostRow>('host', uuid))!.state;

describe('maintenance windows', () => {
  it.each([
    ['a cron expression with six fields', { cron: '0 0 2 * * *' }, /five fields/],
    ['a bad cron expression', { cron: '61 2 * * *' }, /params.cron\[61 2 \* \* \*\] is not a cron expression/],
    ['an unknown time zone', { timeZone: 'Mars/Olympus' }, /params.timeZone\[Mars\/Olympus\]/],
    ['an unknown host', { hostUuids: ['f'.repeat(32)] }, /host\[uuid:f+\] does not exist/],
    ['a zero duration', { durationMinutes: 0 }, /durationMinutes/],
  ])('refuses %s through the job, naming it', async (_n, over, details) => {
    const { t, hosts } = await setup();
    const body = { params: { name: 'w', hostUuids: hosts.map((h) => h.uuid), cron: '0 2 * * *', durationMinutes: 60, ...over } };
    const r = await refused(t, await request(t.app).post('/zstack/v1/maintenance-windows').set(t.auth).send(body));
    expect(r.status).toBe(503);
    expect(r.body.error.code).toBe('SYS.1007');
    expect(r.body.error.details).toMatch(details);
    expect(await t.core.repo.all('maintenanceWindow')).toEqual([]);
  });

  it('fires on time in its zone, enters maintenance, and enables the hosts again after its duration', async () => {
    const { t, hosts } = await setup();
    // 02:00 in Berlin on 1 Jan is 01:00 UTC: 30 minutes from the fake clock's 00:30 UTC.
    const r = await call(t, 'post', '/maintenance-windows', { params: { name: 'nightly', hostUuids: hosts.map((h) => h.uuid), cron: '0 2 * * *', durationMinutes: 60, timeZone: 'Europe/Berlin' } });
    expect(r.status).toBe(200);
    expect(r.body.inventory).toMatchObject({ name: 'nightly', state: 'Waiting', nextFireDate: 'Jan 1, 2026 1:00:00 AM', hostUuids: hosts.map((h) => h.uuid) });
    await advance(t, 29 * MIN);
    expect(await state(t, hosts[0].uuid)).toBe('Enabled');
    await advance(t, MIN);
    for (const h of hosts) expect(await state(t, h.uuid)).toBe('Maintenance');
    // An admin takes host 2 back meanwhile: the window's end leaves it alone.
    await call(t, 'put', `/hosts/${hosts[1].uuid}/actions`, { changeHostState: { stateEvent: 'disable' } });
    await advance(t, 60 * MIN);
    expect(await state(t, hosts[0].uuid)).toBe('Enabled');
    expect(await state(t, hosts[1].uuid)).toBe('Disabled');
    const w = (await t.core.repo.all<MaintenanceWindowRow>('maintenanceWindow'))[0]!;
    expect(w).toMatchObject({ state: 'Waiting', entered: [], nextFireDate: Date.UTC(2026, 0, 2, 1, 0) });
    const q = await request(t.app).get('/zstack/v1/maintenance-windows?q=state=Waiting').set(t.auth);
    expect(q.body.inventories.map((x: any) => x.uuid)).toEqual([w.uuid]);
    expect((await call(t, 'delete', `/maintenance-windows/${w.uuid}`)).status).toBe(200);
    expect(await t.core.repo.all('maintenanceWindow')).toEqual([]);
  });

  it.each([
    ['still within its duration: starts at once', 30 * MIN, 'Maintenance', 0],
    ['over by the time a controller runs: recorded as missed', 90 * MIN, 'Enabled', 1],
  ])('a firing missed while the controller was down, %s', async (_n, downFor, want, missed) => {
    const { t, hosts } = await setup();
    const dir = t.dir;
    await call(t, 'post', '/maintenance-windows', { params: { name: 'w', hostUuids: [hosts[0].uuid], cron: '0 1 * * *', durationMinutes: 60 } });
    // Stop before 01:00 UTC and start again `downFor` after it.
    await t.core.close();
    open.splice(open.indexOf(t), 1);
    const clock = new FakeClock(Date.UTC(2026, 0, 1, 1, 0) + downFor);
    const t2 = await makeController({ dir, clock });
    open.push(t2);
    await t2.core.jobs.drain();
    expect(await state(t2, hosts[0].uuid)).toBe(want);
    const w = (await t2.core.repo.all<MaintenanceWindowRow>('maintenanceWindow'))[0]!;
    expect(w.missed).toBe(missed);
  });
});

describe('several controllers', () => {
  it('each arms the window; a firing runs once (the transaction that moves it to Active wins)', async () => {
    const { t, hosts } = await setup();
    await call(t, 'post', '/maintenance-windows', { params: { name: 'w', hostUuids: [hosts[0].uuid], cron: '0 1 * * *', durationMinutes: 60 } });
    const c = t.core;
    // A second controller's windows over the same store.
    const other = new MaintenanceWindows(c.repo, c.clock, c.log, c.hosts, c.maintenance, () => c.hostOps);
    t.clock.advance(30 * MIN);
    await Promise.all([c.windows.tick(), other.tick(), c.windows.idle()]);
    await c.jobs.drain();
    const jobs = (await c.repo.all<{ uuid: string; apiName: string }>('job')).filter((j) => /ChangeHostState/.test(j.apiName));
    expect(jobs).toHaveLength(1);
    expect(await state(t, hosts[0].uuid)).toBe('Maintenance');
    // A second firing would have reset what the window entered, and its end would leave the host in maintenance.
    expect((await c.repo.all<MaintenanceWindowRow>('maintenanceWindow'))[0]!.entered).toEqual([hosts[0].uuid]);
    t.clock.advance(60 * MIN);
    await Promise.all([c.windows.tick(), other.tick(), c.windows.idle()]);
    await c.jobs.drain();
    expect(await state(t, hosts[0].uuid)).toBe('Enabled');
    await other.stop();
  });
});
