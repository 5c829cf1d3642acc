/**
 * Rows as the API shows them: exactly the contract's inventory fields, dates in ZStack's
 * format, and the `schema` entry naming each inventory's server-side class. Shared by the
 * routes and by long work whose job result carries an inventory.
 */
import type { ResourceSpec } from './resources.ts';
import { formatZStackDate } from './values.ts';

type Rec = Record<string, unknown>;

export function toInventory(res: ResourceSpec, row: object, fields?: readonly string[]): Rec {
  const r = row as Rec;
  const out: Rec = {};
  for (const f of fields ?? res.inventoryFields) {
    const v = r[res.aliases?.[f] ?? f];
    out[f] = res.fields[f]?.type === 'date' && typeof v === 'number' ? formatZStackDate(v) : v ?? null;
  }
  return out;
}

export const one = (res: ResourceSpec, row: object) => ({ inventory: toInventory(res, row), schema: { inventory: res.schemaClass } });

export function many(res: ResourceSpec, rows: object[], fields?: readonly string[], total?: number): Rec {
  const schema: Record<string, string> = {};
  const inventories = rows.map((r, i) => {
    schema[`inventories[${i}]`] = res.schemaClass;
    return toInventory(res, r, fields);
  });
  return { inventories, ...(total !== undefined ? { total } : {}), schema };
}
