/**
 * `npm start`: the controller on the embedded store.
 * Environment: HOSTKEEPER_PORT (8080), HOSTKEEPER_DATA_DIR (./data), HOSTKEEPER_ADMIN_PASSWORD
 * (first start only), HOSTKEEPER_LOG_LEVEL (info), HOSTKEEPER_ADVERTISE_URL (how agents reach
 * us), HOSTKEEPER_DEPLOY_HYPERVISOR (libvirt, or simulator for demos: the driver AddKVMHost deploys). Exits non-zero with one clear line on a
 * bad setting, a port in use or an unreadable store; stops cleanly on SIGTERM/SIGINT.
 */
import { resolve } from 'node:path';
import { createLogger } from './log.ts';
import { startController } from './server.ts';

function fail(msg: string): never {
  process.stderr.write(`hostkeeper: ${msg}\n`);
  process.exit(1);
}

const portText = process.env.HOSTKEEPER_PORT ?? '8080';
if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
  fail(`HOSTKEEPER_PORT[${portText}] must be a port number 0-65535 (0: any free port)`);
}
if (process.env.HOSTKEEPER_DATABASE_URL) {
  fail('HOSTKEEPER_DATABASE_URL is set, but this build has only the embedded store; unset it to use the data dir');
}
const hypervisor = process.env.HOSTKEEPER_DEPLOY_HYPERVISOR ?? 'libvirt';
if (hypervisor !== 'libvirt' && hypervisor !== 'simulator') {
  fail(`HOSTKEEPER_DEPLOY_HYPERVISOR[${hypervisor}] must be libvirt or simulator`);
}
const dataDir = resolve(process.env.HOSTKEEPER_DATA_DIR ?? './data');
const log = createLogger();

try {
  const t0 = performance.now();
  const c = await startController({
    dataDir, port: Number(portText), adminPassword: process.env.HOSTKEEPER_ADMIN_PASSWORD, log,
    agents: { advertiseUrl: process.env.HOSTKEEPER_ADVERTISE_URL || undefined },
    deploy: { hypervisor },
  });
  log.info({ port: c.port, dataDir, ms: Math.round(performance.now() - t0) }, 'controller ready');
  let stopping = false;
  const stop = (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, 'stopping');
    c.close().then(
      () => { log.flush(); process.exit(0); },
      (err) => { process.stderr.write(`hostkeeper: error while stopping: ${(err as Error).message}\n`); process.exit(1); },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
} catch (err) {
  fail((err as Error).message);
}
