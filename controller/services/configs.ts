/**
 * Global configurations: defaults from protocol/configs.ts, persisted values in the store,
 * and change announcements so that dependants (the ping loop, the allocator) pick up a new
 * value without a restart.
 */
import { CONFIG_DEFS, CONFIG_RELATIONS, configKey, findConfigDef } from '../../protocol/configs.ts';
import { invalidArgument, notFound } from '../../protocol/errors.ts';
import type { GlobalConfigRow } from '../../protocol/resources.ts';
import type { Logger } from '../log.ts';
import type { Repository, Tx } from '../store/repository.ts';

export type ConfigListener = (value: string, old: string) => void;

export class GlobalConfigs {
  private readonly values = new Map<string, string>();
  private readonly listeners = new Map<string, Set<ConfigListener>>();

  private constructor(private readonly repo: Repository, private readonly log: Logger) {}

  /** Loads stored values; rows for configs never stored are written with their defaults. */
  static async load(repo: Repository, log: Logger): Promise<GlobalConfigs> {
    const gc = new GlobalConfigs(repo, log);
    await repo.transaction(async (tx) => {
      for (const def of CONFIG_DEFS) {
        const key = configKey(def.category, def.name);
        const row = await tx.get<GlobalConfigRow>('config', key);
        if (row && def.validate(row.value)) {
          gc.values.set(key, row.value);
          // Keep the description and default current with the code.
          if (row.description !== def.description || row.defaultValue !== def.defaultValue) {
            await tx.update<GlobalConfigRow>('config', key, { description: def.description, defaultValue: def.defaultValue });
          }
        } else {
          if (row) log.warn({ config: key, value: row.value }, 'stored value breaks the rule; using the default');
          const fresh: GlobalConfigRow = {
            uuid: key, category: def.category, name: def.name, value: def.defaultValue,
            defaultValue: def.defaultValue, description: def.description,
          };
          if (row) await tx.update('config', key, fresh);
          else await tx.insert('config', fresh);
          gc.values.set(key, def.defaultValue);
        }
      }
      // Stored values from before a relation existed (ping.interval 5 with ping.timeout 10)
      // are each valid alone; the pair goes back to its defaults, which keep every relation.
      for (const rel of CONFIG_RELATIONS) {
        const problem = rel.check((k) => gc.values.get(k)!);
        if (!problem) continue;
        log.warn({ configs: rel.keys, problem }, 'stored values break a rule between configs; using their defaults');
        for (const key of rel.keys) {
          const def = CONFIG_DEFS.find((d) => configKey(d.category, d.name) === key)!;
          await tx.update<GlobalConfigRow>('config', key, { value: def.defaultValue });
          gc.values.set(key, def.defaultValue);
        }
      }
    });
    return gc;
  }

  get(category: string, name: string): string {
    const v = this.values.get(configKey(category, name));
    if (v === undefined) throw new Error(`no global config ${category}/${name}`);
    return v;
  }
  getInt(category: string, name: string): number {
    return Number(this.get(category, name));
  }
  getBool(category: string, name: string): boolean {
    return this.get(category, name) === 'true';
  }

  /** Checks a new value; returns the row to write. Throws SYS.1007 naming the rule. */
  async prepareUpdate(tx: Tx, category: string, name: string, value: unknown): Promise<GlobalConfigRow> {
    const def = findConfigDef(category, name);
    if (!def) throw notFound(`global config[category:${category}, name:${name}] does not exist`);
    if (typeof value !== 'string') throw invalidArgument('updateGlobalConfig.value must be a string');
    if (!def.validate(value)) {
      throw invalidArgument(`value[${value}] of global config[${category}/${name}] is invalid: it must be ${def.rule}`);
    }
    const key = configKey(category, name);
    // The other side of a relation is read in this transaction, not from `values`: two updates
    // in flight (timeout up, interval down) are serialised by the store, and the second sees
    // the first's value, so together they cannot break the rule either.
    for (const rel of CONFIG_RELATIONS.filter((r) => r.keys.includes(key))) {
      const now = new Map<string, string>([[key, value]]);
      for (const k of rel.keys) {
        if (k !== key) now.set(k, (await tx.get<GlobalConfigRow>('config', k))?.value ?? this.values.get(k)!);
      }
      const problem = rel.check((k) => now.get(k)!);
      if (problem) throw invalidArgument(`value[${value}] of global config[${key}] is invalid: ${problem}`);
    }
    return tx.update<GlobalConfigRow>('config', key, { value });
  }

  /** Call after the transaction holding prepareUpdate committed. */
  applied(row: GlobalConfigRow): void {
    const key = configKey(row.category, row.name);
    const old = this.values.get(key)!;
    this.values.set(key, row.value);
    if (old === row.value) return;
    this.log.info({ config: key, old, value: row.value }, 'global config changed');
    for (const l of this.listeners.get(key) ?? []) {
      try {
        l(row.value, old);
      } catch (err) {
        this.log.error({ config: key, err: (err as Error).message }, 'config listener failed');
      }
    }
  }

  /** Subscribes to changes of one config; returns the unsubscribe function. */
  onChange(category: string, name: string, fn: ConfigListener): () => void {
    const key = configKey(category, name);
    if (!findConfigDef(category, name)) throw new Error(`no global config ${key}`);
    let set = this.listeners.get(key);
    if (!set) this.listeners.set(key, (set = new Set()));
    set.add(fn);
    return () => set!.delete(fn);
  }
}
