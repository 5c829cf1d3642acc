/**
 * The host operations that join the store, the agents and deployment, each in one place:
 * ChangeHostState (maintenance start and cancel, reconnect on leaving maintenance),
 * ReconnectHost, DeleteHost and an agent's self-registration with a bootstrap token. Routes
 * check the request and call one method here.
 */
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { HkError, invalidArgument, notFound } from '../../protocol/errors.ts';
import type { RegisterCmd } from '../../protocol/agent.ts';
import { type ControllerEndpoint, newUuid, normalizeIp, normalizeManagementAddress } from '../../protocol/values.ts';
import { one } from '../../protocol/inventory.ts';
import { type HostRow, RESOURCES, type VmRow } from '../../protocol/resources.ts';
import { type ApiStateEvent, inMaintenance } from '../../protocol/states.ts';
import { HOLDING_STATES, vmRef } from '../../protocol/vm.ts';
import { HostAgents } from '../agents/host-agents.ts';
import type { Core } from '../core.ts';
import { checkBootstrapToken, TokenUnusable, useBootstrapToken } from '../services/bootstrap.ts';
import { checkManagementAddress, type DeleteMode, deleteHost, hostRef, insertHost } from '../services/inventory.ts';
import type { JobHandle } from '../services/jobs.ts';
import type { Tx } from '../store/repository.ts';

/** How long a management address's DNS look-up may take (a real timer: it bounds real I/O). */
const RESOLVE_TIMEOUT_MS = 5_000;

export type StateChange =
  | { kind: 'maintenance' }
  | { kind: 'instant'; run: (tx: Tx) => Promise<unknown>; after: () => void };

/** What a registration made: the host row (with its secret and certificate's end) and what the agent is told. */
export interface Registered {
  host: HostRow;
  secret: string;
  certificate: string;
}

export class HostOps {
  constructor(private readonly core: Core) {}

  /**
   * An agent registers its own host with a bootstrap token (POST /zstack/agent/v1/register).
   * All or nothing: everything that needs no store (the host's uuid and secret, its address,
   * its certificate: signing is CPU work, not I/O) is made first; then ONE transaction counts
   * the token's use (re-checking expiry, revocation and maxUses), checks the address is free
   * and inserts the host with its secret and certificate. A failure anywhere leaves the token
   * as it was and no host; two agents racing for a token's last use get one host between them.
   *
   * Throws TokenUnusable (unknown, wrong, expired, revoked or used up), BadPublicKey (the key
   * is not an ECDSA P-256 SPKI PEM) or HkError (the address: malformed, the controller's own,
   * already used; the cluster gone). `from`: the address the request came from (for a
   * managementIp of 0.0.0.0); `self`: the controller's own endpoint.
   */
  async register(b: RegisterCmd, from: string | undefined, self: ControllerEndpoint): Promise<Registered> {
    const { repo, clock, pki } = this.core;
    const token = await checkBootstrapToken(repo, b.token, clock.now());
    if (!token) throw new TokenUnusable('unknown, wrong, expired, revoked or used-up bootstrap token');
    // A key the CA would refuse fails the registration before anything else.
    await pki.checkPublicKey(b.publicKey);
    // 0.0.0.0 means "the address you see me from"; normalised so `::ffff:10.0.0.1` is 10.0.0.1.
    const raw = b.managementIp === '0.0.0.0' ? (normalizeIp(from ?? '') ?? '') : b.managementIp;
    const managementIp = checkManagementAddress('params.managementIp', raw, b.port, self);
    const uuid = newUuid();
    const secret = HostAgents.newSecret();
    const issued = await pki.issueAgent(uuid, managementIp, b.publicKey);
    const host = await repo.transaction(async (tx) => {
      await useBootstrapToken(tx, token.uuid, clock.now());
      const h = await insertHost(
        tx, clock.now(), { name: b.hostname, managementIp: raw, clusterUuid: token.clusterUuid, agentPort: b.port, resourceUuid: uuid },
        'Connecting', 'registered with a bootstrap token', {}, self,
      );
      return tx.update<HostRow>('host', h.uuid, { agentPort: b.port, agentSecret: secret, agentCertNotAfter: issued.notAfter });
    });
    this.core.log.info({ host: host.uuid, managementIp: host.managementIp, cluster: token.clusterUuid }, 'host registered with a bootstrap token');
    return { host, secret, certificate: issued.cert };
  }

  /**
   * The first connect of a registered host, once its agent has its answer (it stores its
   * secret when it reads it; should the connect beat it there, the capped-backoff retry takes over).
   */
  connectRegistered(uuid: string): void {
    const { agents, log } = this.core;
    void agents.connect(uuid).catch((err) => {
      log.info({ host: uuid, err: (err as Error).message }, 'first connect after registration failed; will retry');
      agents.retryLater(uuid, err);
    });
  }

  /**
   * What a ChangeHostState asks for: maintenance (a durable flow) or an instant state change.
   * `enable`/`disable` of a PreMaintenance host cancels its evacuation (the flow sees the new
   * state and stops picking VMs); leaving Maintenance reconnects the host fully.
   */
  async changeState(uuid: string, apiEvent: ApiStateEvent): Promise<StateChange> {
    const { hosts, agents, log } = this.core;
    const host = await hosts.mustGet(uuid);
    const event = hosts.checkStateEvent(host, apiEvent);
    if (event === 'preMaintain') return { kind: 'maintenance' };
    return {
      kind: 'instant',
      run: async (tx) => one(RESOURCES.host, await hosts.applyStateEvent(tx, uuid, event)),
      after: () => {
        if (host.state === 'Maintenance' && host.agentSecret) {
          void agents.connect(uuid).catch((err) => {
            log.info({ host: uuid, err: (err as Error).message }, 'reconnect after maintenance failed; retrying');
            agents.retryLater(uuid, err);
          });
        }
      },
    };
  }

  /**
   * AddKVMHost takes a DNS name as managementIp, as ZStack does: it must resolve before the
   * job does any work, or the job fails with SYS.1007 naming it (not deep in the SSH step).
   */
  async checkResolves(address: string, field = 'params.managementIp'): Promise<void> {
    // A malformed or forbidden address is refused by the host record itself, in its words.
    const n = normalizeManagementAddress(address);
    if (n.problem !== undefined || isIP(n.address)) return;
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${RESOLVE_TIMEOUT_MS / 1000} s`)), RESOLVE_TIMEOUT_MS).unref());
    try {
      await Promise.race([(this.core.lookup ?? lookup)(n.address), timeout]);
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code === 'ENOTFOUND' ? 'no such name' : (err as Error).message;
      throw invalidArgument(`${field}[${address}] does not resolve to an address (${why})`);
    }
  }

  /** Refuses at once what ReconnectHost cannot do; the work is `reconnect()`. */
  async checkReconnect(uuid: string): Promise<HostRow> {
    const host = await this.core.hosts.mustGet(uuid);
    if (inMaintenance(host.state)) {
      throw new HkError('SYS.1006', `host[uuid:${uuid}, state:${host.state}] is in maintenance: enable or disable it first`);
    }
    if (host.deployPhase === 'login' || this.core.deployer.isDeploying(uuid)) {
      throw new HkError('SYS.1006', `${hostRef(host)} is being added (its agent is being deployed): wait for AddKVMHost to finish`);
    }
    HostAgents.target(host); // refuses at once when the host has no agent credentials
    return host;
  }

  async reconnect(host: HostRow, job: JobHandle): Promise<unknown> {
    try {
      return one(RESOURCES.host, await this.core.deployer.reconnect(host.uuid, job));
    } catch (err) {
      this.core.agents.retryLater(host.uuid, err);
      const e = err as HkError;
      throw new HkError('HOST.1002', `unable to reconnect ${hostRef(host)}: ${e.details ?? e.message}`);
    }
  }

  /**
   * DeleteHost. Permissive refuses while VMs run there (naming them); Enforcing stops them
   * first (on a Connected host). A host that is not Connected is always deleted: its VMs
   * become Stopped with their last host kept, and are not restarted anywhere (the host may
   * still be running them: never running twice wins over availability).
   * Returns the VMs to stop before the record goes (none: delete at once).
   */
  async checkDelete(uuid: string, mode: DeleteMode): Promise<VmRow[]> {
    const host = await this.core.repo.get<HostRow>('host', uuid);
    if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
    if (host.status !== 'Connected') return [];
    const running = (await this.core.repo.find<VmRow>('vm', { hostUuid: uuid })).filter((v) => HOLDING_STATES.has(v.state) && v.state !== 'Unknown');
    if (running.length > 0 && mode === 'Permissive') {
      const names = running.slice(0, 10).map((v) => vmRef(v)).join(', ');
      throw new HkError('SYS.1004', `${hostRef(host)} has ${running.length} running VMs (${names}${running.length > 10 ? ', ...' : ''}); migrate or stop them first, or delete with deleteMode=Enforcing`);
    }
    return running;
  }

  /** Stops `running` (cold: the host is going away), then deletes. In the host's queue. */
  async delete(uuid: string, mode: DeleteMode, running: VmRow[], job?: JobHandle): Promise<void> {
    const { hosts, vmOps, repo } = this.core;
    for (const [i, vm] of running.entries()) {
      await job?.progress({ current: i, total: running.length, step: 'stop-vms', message: `stopping ${vmRef(vm)}` });
      await vmOps.stopForEvacuation(vm.uuid, 'cold').catch((err) => {
        throw new HkError('SYS.1004', `cannot delete host[uuid:${uuid}]: stopping ${vmRef(vm)} failed: ${(err as HkError).details ?? (err as Error).message}`);
      });
    }
    // Waits its turn in the host's queue: an add or reconnect in progress finishes (or fails)
    // first, so nothing is deployed to a host that no longer exists.
    const row = await hosts.queue.run(uuid, () => repo.transaction((tx) => this.deleteInTx(tx, uuid, mode)));
    this.afterDelete(row);
  }

  /** The record's removal, in the caller's transaction; a host that is not Connected always goes. */
  async deleteInTx(tx: Tx, uuid: string, mode: DeleteMode): Promise<HostRow> {
    const h = await tx.get<HostRow>('host', uuid);
    // Not Connected: its VMs become Stopped with their last host kept (Enforcing does that).
    const row = await deleteHost(tx, this.core.clock.now(), uuid, h && h.status !== 'Connected' ? 'Enforcing' : mode);
    this.core.log.info({ host: uuid, deleteMode: mode }, 'host deleted');
    return row;
  }

  /** The record is gone whatever happens on the host; undoing the deployment there is best effort. */
  afterDelete(row: HostRow): void {
    const { agents, deployer, log } = this.core;
    agents.forgetHost(row.uuid);
    deployer.stopAgent(row).then(
      (stopped) => stopped && log.info({ host: row.uuid }, 'agent stopped on the deleted host'),
      (err) => log.warn({ host: row.uuid, err: (err as Error).message }, 'could not stop the agent on the deleted host'),
    );
  }
}
