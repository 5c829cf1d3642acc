/**
 * Global config rules: every number has an upper bound that means something, and configs
 * that depend on each other (ping.timeout < ping.interval) are checked together, on update
 * and at load, in the store transaction that writes them.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { GlobalConfigs } from '../../controller/services/configs.ts';
import { EmbeddedStore } from '../../controller/store/embedded-store.ts';
import { CONFIG_DEFS, configKey, findConfigDef } from '../../protocol/configs.ts';
import { HkError } from '../../protocol/errors.ts';
import type { GlobalConfigRow } from '../../protocol/resources.ts';
import { silentLog, tempDir } from '../helpers.ts';

const stores: EmbeddedStore[] = [];
afterEach(async () => {
  while (stores.length) await stores.pop()!.close();
});

async function open(dir?: string) {
  const repo = await EmbeddedStore.open(dir ?? (await tempDir()), { sync: false });
  stores.push(repo);
  return { repo, configs: await GlobalConfigs.load(repo, silentLog()) };
}

/** Applies updates in order, as UpdateGlobalConfig does: validate + write in one transaction, then announce. */
async function update(c: Awaited<ReturnType<typeof open>>, ...kv: [string, string][]): Promise<void> {
  for (const [key, value] of kv) {
    const [category, name] = key.split('/') as [string, string];
    const row = await c.repo.transaction((tx) => c.configs.prepareUpdate(tx, category, name, value));
    c.configs.applied(row);
  }
}

async function refusal(c: Awaited<ReturnType<typeof open>>, key: string, value: string): Promise<HkError> {
  const err = await update(c, [key, value]).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(HkError);
  expect((err as HkError).code).toBe('SYS.1007');
  return err as HkError;
}

/** Node fires a timer at once when asked for more than this. */
const NODE_TIMER_MAX_MS = 2 ** 31 - 1;

describe('upper bounds', () => {
  // [config, the largest accepted value, the smallest refused one above it]
  it.each([
    ['host/load.parallelismDegree', '10000', '10001'],
    ['host/ping.interval', '86400', '86401'],
    ['host/ping.timeout', '3600', '3601'],
    ['host/ping.parallelismDegree', '10000', '10001'],
    ['host/cpu.overProvisioning.ratio', '1000', '1001'],
    ['kvm/vm.migrationQuantity', '100', '101'],
    ['kvm/reservedMemory', '1024T', '1025T'],
    ['kvm/dataVolume.maxNum', '24', '25'],
    ['kvm/host.syncLevel', '1000', '1001'],
  ])('%s takes %s, not %s', async (key, max, over) => {
    const c = await open();
    // ping.timeout below ping.interval: give the timeout room first.
    if (key === 'host/ping.timeout') await update(c, ['host/ping.interval', '86400']);
    await update(c, [key, max]);
    expect(c.configs.get(...(key.split('/') as [string, string]))).toBe(max);
    const err = await refusal(c, key, over);
    const def = findConfigDef(...(key.split('/') as [string, string]))!;
    expect(err.details).toContain(`value[${over}]`);
    expect(err.details).toContain(def.rule);
  });

  it('every seconds config fits a Node timer at its largest', () => {
    for (const key of ['ping.interval', 'ping.timeout']) {
      const def = findConfigDef('host', key)!;
      let max = 0;
      for (let v = 1; v < 10_000_000; v *= 2) if (def.validate(String(v))) max = v;
      expect(max * 1000).toBeLessThan(NODE_TIMER_MAX_MS);
      expect(def.validate('99999999999999999999')).toBe(false);
    }
  });

  it.each(CONFIG_DEFS.map((d) => [configKey(d.category, d.name), d] as const))('%s: the default keeps the rule, the description says what it does', (_k, def) => {
    expect(def.validate(def.defaultValue)).toBe(true);
    expect(def.description.length).toBeGreaterThan(20);
  });
});

describe('host / cpu.overProvisioning.ratio', () => {
  it('is 10 by default and takes integers 1..1000', async () => {
    const c = await open();
    expect(c.configs.getInt('host', 'cpu.overProvisioning.ratio')).toBe(10);
    expect(findConfigDef('host', 'cpu.overProvisioning.ratio')!.description).toMatch(/cpuNum x ratio/);
    for (const bad of ['0', '-1', '1.5', '', ' 2', '2 ', 'ten']) await refusal(c, 'host/cpu.overProvisioning.ratio', bad);
    await update(c, ['host/cpu.overProvisioning.ratio', '1']);
    expect(c.configs.getInt('host', 'cpu.overProvisioning.ratio')).toBe(1);
  });
});

describe('ping.timeout stays below ping.interval', () => {
  // [updates that succeed first, the refused update] (defaults: interval 60, timeout 10)
  it.each([
    [[], ['host/ping.timeout', '60']],
    [[], ['host/ping.timeout', '61']],
    [[], ['host/ping.interval', '10']],
    [[], ['host/ping.interval', '5']],
    [[['host/ping.timeout', '59']], ['host/ping.interval', '59']],
    [[['host/ping.timeout', '1'], ['host/ping.interval', '2']], ['host/ping.interval', '1']],
    [[['host/ping.timeout', '1'], ['host/ping.interval', '2']], ['host/ping.timeout', '2']],
  ] as [[string, string][], [string, string]][])('after %j, %j is refused naming both', async (before, [key, value]) => {
    const c = await open();
    await update(c, ...before);
    const rows = JSON.stringify(await c.repo.all('config'));
    const err = await refusal(c, key, value);
    expect(err.details).toContain('host/ping.timeout');
    expect(err.details).toContain('host/ping.interval');
    expect(err.details).toContain(`value[${value}]`);
    // Nothing written, nothing announced.
    expect(JSON.stringify(await c.repo.all('config'))).toBe(rows);
  });

  it('a pair moved in the right order is accepted', async () => {
    const c = await open();
    await update(c, ['host/ping.interval', '600'], ['host/ping.timeout', '599'], ['host/ping.timeout', '1'], ['host/ping.interval', '2']);
    expect([c.configs.getInt('host', 'ping.timeout'), c.configs.getInt('host', 'ping.interval')]).toEqual([1, 2]);
  });

  it('two updates in flight at once are checked against each other', async () => {
    const c = await open();
    const up = (name: string, value: string) =>
      c.repo.transaction((tx) => c.configs.prepareUpdate(tx, 'host', name, value)).then(
        (row) => c.configs.applied(row),
        (e: HkError) => e.code,
      );
    // Each is valid against the values before both; together they break the rule.
    const results = await Promise.all([up('ping.timeout', '50'), up('ping.interval', '30')]);
    expect(results.filter((r) => r === 'SYS.1007')).toHaveLength(1);
    expect(c.configs.getInt('host', 'ping.timeout')).toBeLessThan(c.configs.getInt('host', 'ping.interval'));
  });

  it('a stored pair that breaks the rule is reset to the defaults at load', async () => {
    const dir = await tempDir();
    const first = await open(dir);
    await first.repo.transaction(async (tx) => {
      await tx.update<GlobalConfigRow>('config', 'host/ping.interval', { value: '5' });
      await tx.update<GlobalConfigRow>('config', 'host/ping.timeout', { value: '10' });
    });
    await stores.pop()!.close();
    const again = await open(dir);
    expect([again.configs.get('host', 'ping.timeout'), again.configs.get('host', 'ping.interval')]).toEqual(['10', '60']);
    expect((await again.repo.get<GlobalConfigRow>('config', 'host/ping.interval'))!.value).toBe('60');
  });
});
