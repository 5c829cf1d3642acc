/** Keeps docs/errors.md and the catalogue in protocol/errors.ts in step (STYLE.md 8). */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERRORS, HkError, toHkError } from '../../protocol/errors.ts';

const doc = readFileSync(resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');
const rows = [...doc.matchAll(/^\| ([A-Z_]+\.\d{4}) \| (\d{3}) \| ([^|]+) \|/gm)].map((m) => [m[1], Number(m[2]), m[3]!.trim()]);

describe('error catalogue', () => {
  it('docs/errors.md lists exactly the catalogue, with the same status and description', () => {
    expect(rows).toEqual(Object.entries(ERRORS).map(([code, e]) => [code, e.status, e.title]));
  });
  it('turns an unknown throw into SYS.1000 without its stack', () => {
    const e = toHkError(new Error('boom\n    at foo (x.ts:1:1)'));
    expect(e.code).toBe('SYS.1000');
    expect(e.details).not.toContain('at foo');
  });
  it('keeps an HkError and its status override', () => {
    const e = new HkError('SYS.1007', 'x', 404);
    expect(toHkError(e)).toBe(e);
    expect(e.toBody()).toEqual({ code: 'SYS.1007', description: 'invalid argument', details: 'x' });
    expect(e.status).toBe(404);
  });
});
