/**
 * Starts the controller: core + its two listeners. Used by main.ts and by tests and benchmarks.
 *
 * - The admin API (and console, metrics) on `port`: plain HTTP by default, as ZStack's
 *   clients expect; HTTPS when `https` is given (a certificate and key, or 'self-signed': one
 *   generated on first start, kept in `<data dir>/tls/admin-*.pem` so its fingerprint stays
 *   the same across restarts, and printed).
 * - The agent port (`agentPort`, HOSTKEEPER_AGENT_PORT, default 7443): TLS only, with the
 *   controller's certificate from its CA (renewed in place), asking for (not requiring) a
 *   client certificate: registration is authenticated by its token, certificate requests
 *   and pushes by their signatures, and an agent's certificate, when presented, must be the
 *   signing host's (api/agent-api.ts). It serves only the agent API.
 */
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import http, { type Server } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { isIP } from 'node:net';
import { join } from 'node:path';
import express from 'express';
import { CONTROLLER_AGENT_PORT } from '../protocol/pki.ts';
import { selfSignedServer } from './pki/x509.ts';
import { agentRouter, onAgentPort } from './api/agent-api.ts';
import { createApp } from './api/app.ts';
import { type Core, type CoreOptions, openCore } from './core.ts';

export interface ControllerOptions extends CoreOptions {
  port?: number;
  /** Listen address of both listeners (HOSTKEEPER_LISTEN, default 0.0.0.0). */
  host?: string;
  /** TLS port for agents (HOSTKEEPER_AGENT_PORT). Default 7443, or any free port when `port` is 0 (tests). */
  agentPort?: number;
  /** HTTPS for the admin API: PEM certificate (chain) and key, or 'self-signed'. Default: plain HTTP. */
  https?: { cert: string; key: string } | 'self-signed';
  /** Connect every host at start (default true; tests that drive connects themselves turn it off). */
  loadHosts?: boolean;
  /**
   * How other controllers on the same database reach this one's API (HOSTKEEPER_PEER_URL).
   * Default: this listener's scheme and port on HOSTKEEPER_ADVERTISE_URL's host, else on the
   * listen address (127.0.0.1 for 0.0.0.0: one machine).
   */
  peerUrl?: string;
}

export interface RunningController {
  core: Core;
  server: Server;
  /** http(s)://127.0.0.1:<port> (or the listen address). */
  url: string;
  port: number;
  /** The TLS listener for agents. */
  agentServer: https.Server;
  agentPort: number;
  /** SHA-256 fingerprint of the admin API's certificate when it speaks HTTPS. */
  fingerprint?: string;
  close(): Promise<void>;
}

/** Self-signed admin certificate lives this long (10 years): an admin pins it by fingerprint. */
const SELF_SIGNED_LIFETIME_MS = 10 * 365 * 24 * 3600_000;

async function selfSignedAdminCert(dataDir: string, host: string, now: number): Promise<{ cert: string; key: string }> {
  const dir = join(dataDir, 'tls');
  const certFile = join(dir, 'admin-cert.pem');
  const keyFile = join(dir, 'admin-key.pem');
  try {
    return { cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8') };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const ips = ['127.0.0.1', ...(isIP(host) === 4 && host !== '0.0.0.0' && host !== '127.0.0.1' ? [host] : [])];
  const made = await selfSignedServer('hostkeeper-controller-api', ['localhost'], ips, now, SELF_SIGNED_LIFETIME_MS);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(keyFile, made.key.privateKey, { mode: 0o600 });
  await writeFile(certFile, made.cert, { mode: 0o644 });
  return { cert: made.cert, key: made.key.privateKey };
}

function listen(server: Server, port: number, host: string, what: string): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') reject(new Error(`${what === 'API' ? '' : `${what} `}port ${port} is already in use`));
      else if (err.code === 'EADDRNOTAVAIL') reject(new Error(`${what}: address ${host} is not available on this machine`));
      else reject(err);
    });
    server.listen(port, host);
  });
}

export async function startController(opts: ControllerOptions): Promise<RunningController> {
  const core = await openCore(opts);
  const host = opts.host ?? '0.0.0.0';
  const servers: Server[] = [];
  try {
    // Before anyone can add a host: an add cut in its password login cannot be finished.
    if (opts.loadHosts !== false) await core.deployer.dropInterruptedLogins();
    const app = createApp(core);
    let server: Server;
    let fingerprint: string | undefined;
    if (opts.https) {
      const pair = opts.https === 'self-signed' ? await selfSignedAdminCert(opts.dataDir, host, core.clock.now()) : opts.https;
      fingerprint = new X509Certificate(pair.cert).fingerprint256;
      server = https.createServer({ cert: pair.cert, key: pair.key }, app);
    } else {
      server = http.createServer(app);
    }
    servers.push(server);
    await listen(server, opts.port ?? 8080, host, 'API');
    server.keepAliveTimeout = 65_000;
    const port = (server.address() as AddressInfo).port;

    const agentApp = express();
    agentApp.disable('x-powered-by');
    agentApp.use('/zstack/agent', onAgentPort, agentRouter(core));
    agentApp.use((_req, res) => res.status(404).json({ success: false, error: 'not an agent API path' }));
    const agentServer = https.createServer({
      key: core.pki.key(), cert: core.pki.cert(), ca: core.pki.caBundle, requestCert: true, rejectUnauthorized: false,
      // Pushes and certificate requests are short; a slow client must not hold a socket long.
      headersTimeout: 20_000, requestTimeout: 60_000,
    }, agentApp);
    core.pki.onRenew(() => agentServer.setSecureContext({ key: core.pki.key(), cert: core.pki.cert(), ca: core.pki.caBundle }));
    servers.push(agentServer);
    await listen(agentServer, opts.agentPort ?? (opts.port === 0 ? 0 : CONTROLLER_AGENT_PORT), host, 'agent');
    const agentPort = (agentServer.address() as AddressInfo).port;
    core.agentPort = agentPort;

    core.agents.setListenPort(port);
    core.agents.setAgentPort(agentPort);
    core.deployer.setListenPort(port);
    const advertised = opts.agents?.advertiseUrl ? new URL(opts.agents.advertiseUrl).hostname : undefined;
    core.cluster.setApiUrl(opts.peerUrl ?? `${opts.https ? 'https' : 'http'}://${advertised ?? (host === '0.0.0.0' ? '127.0.0.1' : host)}:${port}`);
    if (opts.loadHosts !== false) {
      // Join the other controllers (if any) and take our share of the hosts before connecting them.
      await core.cluster.start();
      // Flows cut by a restart (maintenance, migrations) resume once the hosts are connected
      // again: a resumed evacuation needs Connected destinations to place VMs on.
      void core.agents.loadAll()
        .catch((err) => core.log.error({ err: (err as Error).message }, 'start-up connect failed'))
        .then(() => core.runner.resumeAll())
        .then(() => core.vmOps.settleOrphans((f) => core.runner.isLive(f)))
        .catch((err) => core.log.error({ err: (err as Error).message }, 'resuming flows failed'));
      // Now that the cluster knows who is live: also the adds of controllers that are not.
      void core.deployer.dropInterruptedLogins().then(() => core.deployer.resumeDeployments())
        .catch((err) => core.log.error({ err: (err as Error).message }, 'resuming deployments failed'));
    } else {
      void core.runner.resumeAll().catch((err) => core.log.error({ err: (err as Error).message }, 'resuming flows failed'));
    }
    const shown = host === '0.0.0.0' ? '127.0.0.1' : host;
    let closing: Promise<void> | undefined;
    return {
      core, server, port, agentServer, agentPort, ...(fingerprint ? { fingerprint } : {}),
      url: `${opts.https ? 'https' : 'http'}://${shown}:${port}`,
      close() {
        closing ??= (async () => {
          await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
            s.close(() => resolve());
            s.closeIdleConnections();
            // Long-lived responses (the console's event streams, agent channels) never go
            // idle: after a grace for requests in flight, they are cut.
            setTimeout(() => s.closeAllConnections(), 2_000).unref();
          })));
          await core.close();
        })();
        return closing;
      },
    };
  } catch (err) {
    for (const s of servers) s.close();
    await core.close();
    throw err;
  }
}
