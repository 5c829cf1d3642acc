/**
 * Starts the controller: core + HTTP server. Used by main.ts and by tests and benchmarks.
 */
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createApp } from './api/app.ts';
import { type Core, type CoreOptions, openCore } from './core.ts';

export interface ControllerOptions extends CoreOptions {
  port?: number;
  host?: string;
  /** Connect every host at start (default true; tests that drive connects themselves turn it off). */
  loadHosts?: boolean;
}

export interface RunningController {
  core: Core;
  server: Server;
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startController(opts: ControllerOptions): Promise<RunningController> {
  const core = await openCore(opts);
  // Before anyone can add a host: an add cut in its password login cannot be finished.
  if (opts.loadHosts !== false) await core.deployer.dropInterruptedLogins();
  const app = createApp(core);
  const server = app.listen(opts.port ?? 8080, opts.host ?? '0.0.0.0');
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('listening', resolve);
      server.once('error', reject);
    });
  } catch (err) {
    await core.close();
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE') throw new Error(`port ${opts.port} is already in use`);
    throw err;
  }
  server.keepAliveTimeout = 65_000;
  const port = (server.address() as AddressInfo).port;
  core.agents.setListenPort(port);
  core.deployer.setListenPort(port);
  if (opts.loadHosts !== false) {
    void core.agents.loadAll().catch((err) => core.log.error({ err: (err as Error).message }, 'start-up connect failed'));
    void core.deployer.resumeDeployments().catch((err) => core.log.error({ err: (err as Error).message }, 'resuming deployments failed'));
  }
  let closing: Promise<void> | undefined;
  return {
    core, server, port, url: `http://127.0.0.1:${port}`,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeIdleConnections();
        });
        await core.close();
      })();
      return closing;
    },
  };
}
