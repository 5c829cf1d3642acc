/**
 * STYLE.md 1: protocol/ is a leaf; controller/ and agent/ never import each other.
 * Reads every source file's imports (static and dynamic) and fails on a wrong edge.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '../..');

function files(dir: string): string[] {
  const out: string[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...files(p));
    else if (/\.(ts|mts|js|mjs)$/.test(e)) out.push(p);
  }
  return out;
}

const IMPORT_RE = /(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|import\s+['"]([^'"]+)['"]/g;

function topOf(file: string): string {
  return relative(ROOT, file).split(/[\\/]/)[0]!;
}

const FORBIDDEN: Record<string, string[]> = {
  protocol: ['controller', 'agent', 'test', 'bench'],
  controller: ['agent', 'test', 'bench'],
  agent: ['controller', 'test', 'bench'],
};

export function violations(): string[] {
  const bad: string[] = [];
  for (const layer of Object.keys(FORBIDDEN)) {
    for (const f of files(join(ROOT, layer))) {
      const text = readFileSync(f, 'utf8');
      for (const m of text.matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? m[3]!;
        if (!spec.startsWith('.')) continue;
        const target = topOf(resolve(dirname(f), spec));
        if (FORBIDDEN[layer]!.includes(target)) bad.push(`${relative(ROOT, f)} imports ${spec} (${layer} -> ${target})`);
      }
    }
  }
  return bad;
}

/**
 * Rooms inside controller/ (STYLE.md 13, shared/LAYOUT.md): api -> flows -> services,
 * allocator, agents, deploy -> store. What each room may not import. agents/ and deploy/
 * still call services/ to change hosts (the connect and deploy flows live there for now), so
 * their rule names only what they must never reach.
 */
const ROOMS: Record<string, string[]> = {
  allocator: ['api', 'flows', 'services', 'agents', 'deploy', 'store', 'cli'],
  store: ['api', 'flows', 'services', 'agents', 'deploy', 'allocator', 'cli'],
  services: ['api', 'flows', 'agents', 'deploy', 'cli'],
  flows: ['api', 'cli'],
  agents: ['api', 'flows', 'cli'],
  deploy: ['api', 'flows', 'cli'],
  cli: ['api', 'flows', 'services', 'agents', 'deploy', 'store', 'allocator'],
};

export function roomViolations(): string[] {
  const bad: string[] = [];
  const roomOf = (f: string) => relative(join(ROOT, 'controller'), f).split(/[\\/]/)[0]!;
  for (const room of Object.keys(ROOMS)) {
    for (const f of files(join(ROOT, 'controller', room))) {
      for (const m of readFileSync(f, 'utf8').matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? m[3]!;
        if (!spec.startsWith('.')) continue;
        const target = resolve(dirname(f), spec);
        if (topOf(target) !== 'controller') continue;
        const to = roomOf(target);
        if (ROOMS[room]!.includes(to)) bad.push(`${relative(ROOT, f)} imports ${spec} (${room} -> ${to})`);
      }
    }
  }
  return bad;
}

describe('layering', () => {
  it('rooms inside controller/: api -> flows -> services, allocator, agents, deploy -> store', () => {
    expect(roomViolations()).toEqual([]);
  });
  it('protocol is a leaf; controller and agent do not import each other', () => {
    expect(violations()).toEqual([]);
  });
  it('the check itself catches a wrong import', () => {
    const text = "import { x } from '../controller/core.ts';";
    const m = [...text.matchAll(IMPORT_RE)][0]!;
    expect(topOf(resolve(join(ROOT, 'protocol'), m[1]!))).toBe('controller');
  });
  it('protocol imports no npm package but zod', () => {
    const bad: string[] = [];
    for (const f of files(join(ROOT, 'protocol'))) {
      for (const m of readFileSync(f, 'utf8').matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? m[3]!;
        if (!spec.startsWith('.') && !spec.startsWith('node:') && spec !== 'zod') bad.push(`${relative(ROOT, f)}: ${spec}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
