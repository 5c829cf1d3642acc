/**
 * Where controller start-up time goes, measured inside one process (spawned by
 * controller.bench.ts as `node --import tsx bench/startup-phases.ts <data dir> <port>`;
 * prints one JSON line). It runs the real start path (startController) and then, after
 * closing it, re-times the store's parts on the same (now warm) files:
 *
 *   boot      process start -> this module runs (node + the tsx loader)
 *   imports   loading controller/server.ts and everything it pulls in (express, zod, pino, lowdb)
 *   start     startController(): store open, configs, jobs, auth, app, listen
 *   read      readFile(store.json, 'utf8')             } re-measured after close; open - read -
 *   parse     JSON.parse of it                         } parse ~ filling tables and indexes
 *   open      EmbeddedStore.open on the same dir       } (GC included in each)
 *
 * It must run on a data dir no controller is using.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

const boot = process.uptime() * 1000;
const [dataDir, portText] = process.argv.slice(2);
if (!dataDir || !portText) throw new Error('usage: startup-phases.ts <data dir> <port>');

let t = performance.now();
const lap = (): number => {
  const now = performance.now();
  const ms = now - t;
  t = now;
  return ms;
};

const { startController } = await import('../controller/server.ts');
const { createLogger } = await import('../controller/log.ts');
const { EmbeddedStore } = await import('../controller/store/embedded-store.ts');
const imports = lap();

const c = await startController({ dataDir, port: Number(portText), host: '127.0.0.1', log: createLogger({ level: 'warn' }) });
const start = lap();
await c.close();
lap();

const text = await readFile(join(dataDir, 'store.json'), 'utf8');
const read = lap();
let snap: unknown = JSON.parse(text);
const parse = lap();
snap = undefined;
void snap;
const store = await EmbeddedStore.open(dataDir);
const open = lap();
await store.close();

process.stdout.write(`${JSON.stringify({ boot, imports, start, read, parse, open, total: boot + imports + start })}\n`);
