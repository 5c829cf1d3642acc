/**
 * Host lifecycle: admin state changes and connection status changes (maintenance itself is
 * a durable flow: controller/flows/maintenance.ts). Every change to one host goes through
 * that host's queue (STYLE.md 6), so two state changes never interleave, and is logged as one
 * line.
 */
import { notFound, operationError } from '../../protocol/errors.ts';
import type { HostRow } from '../../protocol/resources.ts';
import {
  type ApiStateEvent, apiEventToStateEvent, HOST_STATE_TABLE, HOST_STATUS_TABLE, type HostState,
  type HostStateEvent, type HostStatusEvent, IllegalTransitionError, nextState,
} from '../../protocol/states.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { KeyedQueue } from '../queue.ts';
import type { Repository, Tx } from '../store/repository.ts';
import { markHostVmsUnknown } from './vms.ts';
import { hostRef } from './inventory.ts';
import { recordEvent, severityOf } from '../events.ts';

export class Hosts {
  readonly queue = new KeyedQueue();

  constructor(private readonly repo: Repository, private readonly clock: Clock, private readonly log: Logger) {}

  async mustGet(uuid: string): Promise<HostRow> {
    const h = await this.repo.get<HostRow>('host', uuid);
    if (!h) throw notFound(`host[uuid:${uuid}] does not exist`);
    return h;
  }

  /**
   * Checks an API state event against the table and the host's status, without changing
   * anything: the API answers a refused event at once with a 4xx.
   */
  checkStateEvent(host: HostRow, apiEvent: ApiStateEvent): HostStateEvent {
    const event = apiEventToStateEvent(apiEvent);
    // Name the word the caller sent, not the internal event it maps to.
    if (HOST_STATE_TABLE[host.state][event] === undefined) throw new IllegalTransitionError(hostRef(host), host.state, apiEvent);
    if (event === 'preMaintain' && host.status !== 'Connected') {
      throw operationError(`can not maintain ${hostRef(host)} which is not Connected`);
    }
    return event;
  }

  /** Applies one state event in a transaction; logs the change. */
  async applyStateEvent(tx: Tx, uuid: string, event: HostStateEvent): Promise<HostRow> {
    const host = await tx.get<HostRow>('host', uuid);
    if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
    const to = nextState(HOST_STATE_TABLE, host.state, event, hostRef(host));
    if (to === host.state) return host;
    const updated = await tx.update<HostRow>('host', uuid, { state: to, lastOpDate: this.clock.now() });
    this.log.info({ host: uuid, event, from: host.state, to }, 'host state changed');
    await recordEvent(tx, {
      type: 'HostStateChanged', resourceType: 'HostVO', resourceUuid: uuid, resourceName: host.name, hostUuid: uuid,
      from: host.state, to, message: `host[name:${host.name}, uuid:${uuid}] state ${host.state} -> ${to}`,
    });
    return updated;
  }

  /** Moves the connection status through the status table; logs the change. */
  async applyStatusEvent(tx: Tx, uuid: string, event: HostStatusEvent, reason = ''): Promise<HostRow> {
    const host = await tx.get<HostRow>('host', uuid);
    if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
    const to = nextState(HOST_STATUS_TABLE, host.status, event, hostRef(host));
    if (to === host.status && reason === host.statusReason) return host;
    const updated = await tx.update<HostRow>('host', uuid, { status: to, statusReason: reason, lastOpDate: this.clock.now() });
    if (to !== host.status) {
      this.log.info({ host: uuid, event, from: host.status, to, reason }, 'host status changed');
      await recordEvent(tx, {
        type: 'HostStatusChanged', resourceType: 'HostVO', resourceUuid: uuid, resourceName: host.name, hostUuid: uuid,
        from: host.status, to, severity: severityOf('HostStatusChanged', to),
        message: `host[name:${host.name}, uuid:${uuid}] ${to === 'Connected' && host.status !== 'Connected' ? 'connected' : to === 'Disconnected' ? 'disconnected' : `is ${to}`}${reason ? `: ${reason}` : ''}`,
      });
    }
    // A VM on a Disconnected host is Unknown until its host reconnects and reports it.
    if (to === 'Disconnected' && host.status !== 'Disconnected') {
      const n = await markHostVmsUnknown(tx, this.clock.now(), uuid);
      if (n > 0) this.log.info({ host: uuid, vms: n }, 'VMs of the disconnected host are Unknown');
    }
    return updated;
  }
}
