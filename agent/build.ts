/**
 * `npx tsx agent/build.ts`: bundles the agent into ONE file, dist/hostkeeper-agent.mjs
 * (and the fleet into dist/hostkeeper-fleet.mjs), with esbuild's JS API. Run with plain
 * `node dist/hostkeeper-agent.mjs --listen ...`: no tsx loader, no node_modules, a smaller
 * resident set (see agent/README.md for the figures).
 */
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import * as esbuild from 'esbuild';

const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const OUT = join(ROOT, 'dist');

/**
 * Packages express loads but the agent never calls: it parses bodies itself (body-parser),
 * serves no files (serve-static, send), writes JSON with Node's own methods (mime-types and
 * its 200 KB database), and uses the simple query parser (qs). Left out of the bundle they
 * save ~6 MB of resident memory; a call into one throws, naming it, instead of misbehaving.
 * Likewise Node's `http2`, which axios imports for `httpVersion: 2` only (the agent's client,
 * http-client.ts, speaks HTTP/1.1): the bundle's static import of it would load it at every
 * start; without it an idle agent is ~0.3-0.8 MB smaller (bench/agent-rss.bench.ts).
 */
export const STUBBED = ['body-parser', 'serve-static', 'send', 'mime-types', 'qs', 'http2'];

const stubPlugin: esbuild.Plugin = {
  name: 'hostkeeper-stubs',
  setup(b) {
    b.onResolve({ filter: new RegExp(`^(${STUBBED.join('|')})$`) }, (a) => ({ path: a.path, namespace: 'hk-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'hk-stub' }, (a) => ({
      loader: 'js',
      contents: `const fail = () => { throw new Error(${JSON.stringify(`${a.path} is not part of the agent bundle (agent/build.ts)`)}); };
module.exports = new Proxy(fail, { get: (_t, k) => (k === '__esModule' ? false : fail) });`,
    }));
  },
};

export async function buildAgent(outDir = OUT): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { 'hostkeeper-agent': 'agent/main.ts', 'hostkeeper-fleet': 'agent/fleet.ts' },
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    minify: true,
    legalComments: 'none',
    logLevel: 'warning',
    plugins: [stubPlugin],
    // CommonJS dependencies (express, pino, systeminformation) call require() on Node's
    // built-ins; an ESM bundle has no require of its own.
    banner: { js: "import { createRequire as __hkCreateRequire } from 'node:module'; const require = __hkCreateRequire(import.meta.url);" },
  });
  if (result.errors.length) throw new Error(`esbuild: ${result.errors.map((e) => e.text).join('; ')}`);
  return ['hostkeeper-agent.mjs', 'hostkeeper-fleet.mjs'].map((f) => join(outDir, f));
}

if (process.argv[1] && resolve(process.argv[1]) === resolve(new URL(import.meta.url).pathname)) {
  // `--out DIR`: where the controller keeps the bundle it deploys (it runs this as a process:
  // controller and agent code do not import each other).
  const i = process.argv.indexOf('--out');
  const files = await buildAgent(i > 0 && process.argv[i + 1] ? resolve(process.argv[i + 1]!) : OUT);
  for (const f of files) process.stdout.write(`built ${f} (${Math.round((await stat(f)).size / 1024)} KiB)\n`);
}
