/**
 * `npm run screenshots`: refreshes docs/screenshots/*.png from a live console (a controller
 * and 50 simulated hosts in this process, on 127.30.x.y) driven by Debian's chromium, the
 * same browser the tests use. Run by hand after a UI change; CI never writes these files.
 *   npx tsx scripts/screenshots.ts [outDir]
 */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { launch, loggedIn, startConsoleFleet } from '../test/console/fixture.ts';

const out = resolve(process.argv[2] ?? join(import.meta.dirname, '..', 'docs', 'screenshots'));
await mkdir(out, { recursive: true });
const f = await startConsoleFleet({ hosts: 50, vms: 60, ip: '127.30.0.2', firstAgentIp: '127.30.8.1' });
const browser = await launch();
try {
  // Some history to show near the top of the hosts table (sorted by name): two hosts down,
  // one disabled, and later the maintained one.
  f.agents[9]!.kill();
  f.agents[11]!.kill();
  const hosts = (await f.call('GET', '/hosts?sort=%2Bname&limit=50')).body.inventories as { uuid: string; name: string; managementIp: string }[];
  const disable = hosts.find((h) => h.managementIp === f.agents[13]!.ip)!;
  await f.call('PUT', `/hosts/${disable.uuid}/actions`, { changeHostState: { stateEvent: 'disable' } });
  const withVms = (await f.call('GET', '/vm-instances?limit=1')).body.inventories[0].hostUuid as string;
  const page = await loggedIn(browser, f.base);
  const shot = async (name: string) => {
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(out, `${name}.png`) });
    console.log(`wrote ${join(out, `${name}.png`)}`);
  };
  await page.goto(`${f.base}/#/`);
  await page.waitForSelector('#capacity .cluster');
  await shot('overview');
  await page.goto(`${f.base}/#/hosts/${withVms}`);
  await page.waitForSelector('#host-vms');
  await shot('host');
  await page.click('text=Maintain…');
  await page.waitForSelector('#maintain-plan');
  await shot('maintenance-plan');
  // Slow transfers, so the progress view has something to show.
  for (const a of f.agents) a.sim.inject({ op: 'migrate', delayMs: 2500, times: 1 });
  await page.click('text=Enter maintenance');
  await page.waitForSelector('#maintain-plan .phase [data-v=migrating]').catch(async (e) => {
    await page.screenshot({ path: '/tmp/hk-screenshot-failure.png' });
    throw e;
  });
  await shot('maintenance-progress');
  await page.waitForSelector('text=Done: the host is in Maintenance', { timeout: 30_000 });
  await shot('maintenance-done');
  await page.goto(`${f.base}/#/hosts`);
  await page.waitForSelector('#hosts-table tbody tr [data-v=Disconnected]', { timeout: 15_000 });
  await shot('hosts');
  await page.goto(`${f.base}/#/vms`);
  await page.waitForSelector('#vms-table tbody tr');
  await page.click('#vms-table >> text=Migrate… >> nth=0');
  await page.waitForSelector('#dropped');
  await shot('migrate');
  await page.goto(`${f.base}/#/hosts`);
  await page.click('text=Bootstrap token');
  await page.selectOption('.modal select[name=clusterUuid]', { index: 1 });
  await page.click('text=Create token');
  await page.waitForSelector('#agent-command');
  await shot('bootstrap-token');
  await page.goto(`${f.base}/#/configs`);
  await page.fill('tr[data-config="host/ping.interval"] input', 'soon');
  await page.click('tr[data-config="host/ping.interval"] button[type=submit]');
  await page.waitForSelector('tr[data-config="host/ping.interval"] .err');
  await shot('configs');
  await page.goto(`${f.base}/#/events`);
  await page.waitForSelector('.events li');
  await shot('events');
  await page.goto(`${f.base}/#/api`);
  await page.waitForSelector('details.op');
  await page.click('details.op >> nth=5');
  await shot('api-reference');
} finally {
  await browser.close();
  await f.close();
}
