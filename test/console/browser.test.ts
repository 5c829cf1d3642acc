/**
 * The console in a real browser: Debian's chromium driven by playwright-core (provisioned by
 * test/provision/chromium.sh), against a controller and a simulated fleet of 50 hosts in this
 * process (127.30.x.y). One page is reused across the tests, in order, to stay lean: login,
 * the fleet shows, a killed agent's row turns Disconnected live, maintenance with its plan and
 * per-VM progress, an inline config error.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostRow, VmRow } from '../../protocol/resources.ts';
import { type ConsoleFleet, haveChromium, launch, PASSWORD, startConsoleFleet } from './fixture.ts';

const HOSTS = 50;
let f: ConsoleFleet;
let browser: Browser;
let page: Page;

describe.skipIf(!haveChromium())('the web console in chromium', () => {
  beforeAll(async () => {
    [f, browser] = await Promise.all([startConsoleFleet({ hosts: HOSTS, vms: 6, ip: '127.30.0.1', firstAgentIp: '127.30.1.1' }), launch()]);
    page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  }, 90_000);
  afterAll(async () => {
    await browser?.close();
    await f?.close();
  });

  it.each([
    { what: 'a wrong password', password: 'not-the-password', message: 'Wrong account name or password.' },
    { what: 'an empty password', password: ' ', message: 'Wrong account name or password.' },
  ])('refuses $what with a clear message', async ({ password, message }) => {
    await page.goto(`${f.base}/`);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
    expect(await page.textContent('#login-error')).toBe(message);
  });

  it('logs in and shows the fleet of 50 hosts', async () => {
    await page.fill('input[name=password]', PASSWORD);
    await page.click('button[type=submit]');
    await page.waitForSelector('nav.side');
    await page.goto(`${f.base}/#/hosts?limit=100`);
    await page.waitForSelector('#hosts-table tbody tr');
    expect(await page.locator('#hosts-table tbody tr').count()).toBe(HOSTS);
    expect(await page.locator('#hosts-table td.status [data-v=Connected]').count()).toBe(HOSTS);
  });

  it('turns a killed agent\'s row Disconnected within 3 s, without a reload', async () => {
    await page.evaluate(() => { (window as unknown as { marker: number }).marker = 1; });
    const victim = f.agents[3]!;
    const uuid = (await f.c.core.repo.find<HostRow>('host', { managementIp: victim.ip }))[0]!.uuid;
    const t0 = Date.now();
    victim.kill();
    await page.waitForSelector(`#hosts-table tr[data-uuid="${uuid}"] td.status [data-v=Disconnected]`, { timeout: 3000 });
    const ms = Date.now() - t0;
    expect(ms).toBeLessThan(3000);
    expect(await page.evaluate(() => (window as unknown as { marker?: number }).marker)).toBe(1);
  });

  it('maintains a host with VMs: the plan, live per-VM progress, then Maintenance', async () => {
    const vms = await f.c.core.repo.all<VmRow>('vm');
    const counts = new Map<string, number>();
    const connected = new Set((await f.c.core.repo.find<HostRow>('host', { status: 'Connected' })).map((h) => h.uuid));
    for (const v of vms) if (v.hostUuid && connected.has(v.hostUuid)) counts.set(v.hostUuid, (counts.get(v.hostUuid) ?? 0) + 1);
    expect(counts.size).toBeGreaterThan(0);
    const [hostUuid] = [...counts].sort((a, b) => b[1] - a[1])[0]!;
    await page.goto(`${f.base}/#/hosts/${hostUuid}`);
    await page.click('text=Maintain…');
    await page.waitForSelector('#maintain-plan tbody tr');
    expect(await page.locator('#maintain-plan tbody tr').count()).toBe(counts.get(hostUuid));
    expect(await page.locator('#maintain-plan [data-v=migrate]').count()).toBe(counts.get(hostUuid));
    await page.click('text=Enter maintenance');
    await page.waitForSelector('#maintain-progress');
    await page.waitForSelector('text=Done: the host is in Maintenance', { timeout: 20_000 });
    expect(await page.locator('#maintain-plan .phase [data-v=migrated]').count()).toBe(counts.get(hostUuid));
    await page.click('text=Close');
    await page.waitForSelector('#host-state [data-v=Maintenance]');
    expect((await f.c.core.repo.get<HostRow>('host', hostUuid))!.state).toBe('Maintenance');
  });

  it.each([
    { config: 'host/ping.interval', value: 'soon', error: /ping\.interval/ },
    { config: 'kvm/reservedMemory', value: '12 parsecs', error: /reservedMemory/ },
  ])('shows $config = "$value" refused inline', async ({ config, value, error }) => {
    await page.goto(`${f.base}/#/configs`);
    const row = page.locator(`tr[data-config="${config}"]`);
    await row.locator('input').fill(value);
    await row.locator('button[type=submit]').click();
    await row.locator('.err').waitFor();
    expect(await row.locator('.err').textContent()).toMatch(error);
    expect(await row.locator('input').getAttribute('aria-invalid')).toBe('true');
  });
});
