/**
 * `npm start`: the controller on the embedded store.
 * Environment: HOSTKEEPER_PORT (8080), HOSTKEEPER_DATA_DIR (./data), HOSTKEEPER_ADMIN_PASSWORD
 * (first start only), HOSTKEEPER_LOG_LEVEL (info), HOSTKEEPER_ADVERTISE_URL (how agents reach
 * us), HOSTKEEPER_DEPLOY_HYPERVISOR (libvirt, or simulator for demos: the driver AddKVMHost deploys),
 * HOSTKEEPER_PEER_URL (how other controllers on the same database reach this one's API;
 * default: this port on the advertised host), HOSTKEEPER_AGENT_PORT (7443: the TLS port agents use), HOSTKEEPER_LISTEN (0.0.0.0: the
 * address both listeners bind), HOSTKEEPER_TLS_CERT + HOSTKEEPER_TLS_KEY (PEM files: the
 * admin API speaks HTTPS) or HOSTKEEPER_TLS=self-signed (one generated, its fingerprint
 * printed). Exits non-zero with one clear line on a
 * bad setting, a port in use or an unreadable store; stops cleanly on SIGTERM/SIGINT.
 */
import { readFileSync } from 'node:fs';
import { isIPv4 } from 'node:net';
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
// Default 7443; with HOSTKEEPER_PORT=0 (any free port: tests, several controllers on one
// machine) an unset agent port is any free port too, so two such controllers do not collide.
const agentPortText = process.env.HOSTKEEPER_AGENT_PORT ?? (portText === '0' ? '0' : '7443');
if (!/^\d+$/.test(agentPortText) || Number(agentPortText) > 65535) {
  fail(`HOSTKEEPER_AGENT_PORT[${agentPortText}] must be a port number 0-65535 (0: any free port)`);
}
if (Number(agentPortText) !== 0 && agentPortText === portText) fail(`HOSTKEEPER_AGENT_PORT and HOSTKEEPER_PORT are both ${portText}: they are two listeners`);
const listenHost = process.env.HOSTKEEPER_LISTEN || '0.0.0.0';
if (!isIPv4(listenHost)) fail(`HOSTKEEPER_LISTEN[${listenHost}] must be an IPv4 address (0.0.0.0: every address)`);
const tlsMode = process.env.HOSTKEEPER_TLS;
const certFile = process.env.HOSTKEEPER_TLS_CERT;
const keyFile = process.env.HOSTKEEPER_TLS_KEY;
if (tlsMode !== undefined && tlsMode !== '' && tlsMode !== 'self-signed') fail(`HOSTKEEPER_TLS[${tlsMode}] must be self-signed (or unset; a certificate of your own goes in HOSTKEEPER_TLS_CERT/HOSTKEEPER_TLS_KEY)`);
if (!!certFile !== !!keyFile) fail('HOSTKEEPER_TLS_CERT and HOSTKEEPER_TLS_KEY go together: the certificate (PEM) and its key');
if (certFile && tlsMode) fail('HOSTKEEPER_TLS=self-signed and HOSTKEEPER_TLS_CERT are both set: choose one');
let httpsOpt: { cert: string; key: string } | 'self-signed' | undefined;
if (certFile && keyFile) {
  try {
    httpsOpt = { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') };
  } catch (err) {
    fail(`cannot read HOSTKEEPER_TLS_CERT/HOSTKEEPER_TLS_KEY: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
} else if (tlsMode === 'self-signed') {
  httpsOpt = 'self-signed';
}
const databaseUrl = process.env.HOSTKEEPER_DATABASE_URL || undefined;
if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) fail('HOSTKEEPER_DATABASE_URL must be a postgres:// or postgresql:// URL');
const hypervisor = process.env.HOSTKEEPER_DEPLOY_HYPERVISOR ?? 'libvirt';
if (hypervisor !== 'libvirt' && hypervisor !== 'simulator') {
  fail(`HOSTKEEPER_DEPLOY_HYPERVISOR[${hypervisor}] must be libvirt or simulator`);
}
const dataDir = resolve(process.env.HOSTKEEPER_DATA_DIR ?? './data');
const log = createLogger();

try {
  const t0 = performance.now();
  const c = await startController({
    dataDir, databaseUrl, port: Number(portText), host: listenHost, agentPort: Number(agentPortText), https: httpsOpt, adminPassword: process.env.HOSTKEEPER_ADMIN_PASSWORD, log,
    agents: { advertiseUrl: process.env.HOSTKEEPER_ADVERTISE_URL || undefined },
    peerUrl: process.env.HOSTKEEPER_PEER_URL || undefined,
    deploy: { hypervisor },
  });
  if (c.fingerprint) process.stdout.write(`API over HTTPS on ${c.url}; certificate SHA-256 fingerprint ${c.fingerprint}\n`);
  log.info({ port: c.port, agentPort: c.agentPort, listen: listenHost, https: !!c.fingerprint, caCertHash: c.core.pki.caCertHash, dataDir, store: databaseUrl ? 'postgres' : 'embedded', ms: Math.round(performance.now() - t0) }, 'controller ready');
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
