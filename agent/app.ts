/**
 * The agent's routes: ONE express app per process, shared by every agent in it (a fleet
 * process runs thousands). The server of each agent authenticates a request first
 * (server.ts), tags it with its agent, and only then hands it here; so nothing in this file
 * ever sees an unauthenticated request, and bodies are parsed only by known routes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Express, type NextFunction, type Request, type Response } from 'express';
import { AGENT_PATHS } from '../protocol/agent.ts';
import { answerHeaders } from './answers.ts';
import type { Agent } from './server.ts';
import { check, parseJsonBody } from './validate.ts';

const AGENT = Symbol('hostkeeper.agent');
/**
 * Writes a JSON answer with Node's own response methods. Not `res.json()`: express's
 * response helpers pull in mime-types (and its 200 KB type database), which the agent
 * bundle leaves out to stay small (agent/build.ts).
 */
export function sendJson(res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), ...extra, ...answerHeaders(res, status, text),
  });
  res.end(text);
}

export interface AgentRequest extends IncomingMessage {
  [AGENT]?: Agent;
  /** The body as read for the signature check. */
  rawBody?: Buffer;
  /** vmReceive only: the one-time token header. */
  migrationToken?: string;
}

export function tagRequest(req: IncomingMessage, agent: Agent, rawBody?: Buffer, migrationToken?: string): AgentRequest {
  const r = req as AgentRequest;
  r[AGENT] = agent;
  r.rawBody = rawBody;
  r.migrationToken = migrationToken;
  return r;
}

function agentOf(req: Request): Agent {
  const a = (req as unknown as AgentRequest)[AGENT];
  if (!a) throw new Error('request reached the agent routes without passing authentication');
  return a;
}

type Handler = (agent: Agent, body: () => unknown, req: AgentRequest) => Promise<object>;

function build(): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  // Exact paths: `/vm/migrate/receive/` or `/HOST/PING` are not routes.
  app.set('strict routing', true);
  app.set('case sensitive routing', true);

  const route = (path: string, h: Handler) =>
    app.post(path, async (req: Request, res: Response) => {
      const ar = req as unknown as AgentRequest;
      const out = await h(agentOf(req), () => parseJsonBody(ar.rawBody ?? Buffer.alloc(0)), ar);
      sendJson(res as unknown as ServerResponse, 200, { success: true, ...out });
    });

  route(AGENT_PATHS.echo, async () => ({}));
  route(AGENT_PATHS.connect, async (a, body) => a.connect(check.connect(body())));
  route(AGENT_PATHS.ping, async (a) => a.identity());
  route(AGENT_PATHS.fact, async (a) => ({ facts: await a.facts() }));
  route(AGENT_PATHS.capacity, async (a) => ({ capacity: await a.capacity() }));
  route(AGENT_PATHS.updateConfig, async (a, body) => a.updateConfig(check.updateConfig(body())));
  route(AGENT_PATHS.vmList, async (a) => ({ vms: await a.driver.list() }));
  route(AGENT_PATHS.vmCreate, async (a, body) => {
    const cmd = check.vmCreate(body());
    return { vm: await a.driver.create(cmd.vm, cmd.start === true) };
  });
  route(AGENT_PATHS.vmStart, async (a, body) => ({ vm: await a.driver.start(check.vmUuid(body()).vmUuid) }));
  route(AGENT_PATHS.vmStop, async (a, body) => {
    const cmd = check.vmStop(body());
    return { vm: await a.driver.stop(cmd.vmUuid, { type: cmd.type, graceTimeoutMs: cmd.graceTimeoutMs }) };
  });
  route(AGENT_PATHS.vmReboot, async (a, body) => ({ vm: await a.driver.reboot(check.vmUuid(body()).vmUuid) }));
  route(AGENT_PATHS.vmDestroy, async (a, body) => ({ vm: await a.driver.destroy(check.vmUuid(body()).vmUuid) }));
  route(AGENT_PATHS.vmPrepareMigration, async (a, body) => a.prepareMigration(check.vmPrepareMigration(body())));
  route(AGENT_PATHS.vmMigrate, async (a, body) => ({ vm: await a.migrate(check.vmMigrate(body())) }));
  route(AGENT_PATHS.vmResolveMigration, async (a, body) => ({ vm: await a.resolveMigration(check.vmResolveMigration(body())) }));
  route(AGENT_PATHS.vmReceive, async (a, body, req) => ({ vm: await a.receive(req.migrationToken, check.vmReceive(body())) }));

  app.post(AGENT_PATHS.channel, (req: Request, res: Response) => {
    agentOf(req).openChannel(req, res as unknown as ServerResponse);
  });

  app.use((req: Request, res: Response) => {
    sendJson(res as unknown as ServerResponse, 404, { success: false, error: `no such path: ${req.method} ${req.path.slice(0, 200)}` });
  });
  app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    agentOf(req).sendError(req, res as unknown as ServerResponse, err);
  });
  return app;
}

let shared: Express | undefined;
export function agentApp(): (req: IncomingMessage, res: ServerResponse) => void {
  return (shared ??= build()) as unknown as (req: IncomingMessage, res: ServerResponse) => void;
}
