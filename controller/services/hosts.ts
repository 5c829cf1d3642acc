/**
 * Host lifecycle: admin state changes (with the maintenance flow) and connection status
 * changes. Every change to one host goes through that host's queue (STYLE.md 6), so two
 * state changes never interleave, and is logged as one line.
 */
import { HkError, notFound, operationError } from '../../protocol/errors.ts';
import type { HostRow, VmRow } from '../../protocol/resources.ts';
import {
  type ApiStateEvent, apiEventToStateEvent, HOST_STATE_TABLE, HOST_STATUS_TABLE, type HostState,
  type HostStateEvent, type HostStatusEvent, IllegalTransitionError, nextState,
} from '../../protocol/states.ts';
import type { Clock } from '../clock.ts';
import { runFlow, type Step } from '../flow.ts';
import type { Logger } from '../log.ts';
import { KeyedQueue } from '../queue.ts';
import type { Repository, Tx } from '../store/repository.ts';
import type { JobHandle } from './jobs.ts';
import { hostRef } from './inventory.ts';

/** VMs that maintenance must move or stop: on the host and not known to be down (ZStack skips Unknown). */
const VMS_TO_EVACUATE = new Set<VmRow['state']>(['Starting', 'Running', 'Stopping', 'Migrating', 'Created']);

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
    return updated;
  }

  /** Moves the connection status through the status table; logs the change. */
  async applyStatusEvent(tx: Tx, uuid: string, event: HostStatusEvent, reason = ''): Promise<HostRow> {
    const host = await tx.get<HostRow>('host', uuid);
    if (!host) throw notFound(`host[uuid:${uuid}] does not exist`);
    const to = nextState(HOST_STATUS_TABLE, host.status, event, hostRef(host));
    if (to === host.status && reason === host.statusReason) return host;
    const updated = await tx.update<HostRow>('host', uuid, { status: to, statusReason: reason, lastOpDate: this.clock.now() });
    if (to !== host.status) this.log.info({ host: uuid, event, from: host.status, to, reason }, 'host status changed');
    return updated;
  }

  /**
   * Maintenance as a flow: PreMaintenance, move the VMs off, Maintenance. A failure rolls the
   * host back to the state it had. Runs in the host's queue.
   */
  async maintain(uuid: string, job?: JobHandle): Promise<HostRow> {
    return this.queue.run(uuid, async () => {
      const host = await this.mustGet(uuid);
      this.checkStateEvent(host, 'preMaintain');
      const ctx = { original: host.state as HostState };
      const steps: Step<typeof ctx>[] = [
        {
          name: 'enter-pre-maintenance',
          run: async () => {
            await this.repo.transaction((tx) => this.applyStateEvent(tx, uuid, 'preMaintain'));
          },
          rollback: async () => {
            const back: HostStateEvent = ctx.original === 'Disabled' ? 'disable' : 'enable';
            await this.repo.transaction((tx) => this.applyStateEvent(tx, uuid, back));
          },
        },
        {
          name: 'evacuate-vms',
          run: async () => {
            const vms = (await this.repo.find<VmRow>('vm', { hostUuid: uuid })).filter((v) => VMS_TO_EVACUATE.has(v.state));
            if (vms.length > 0) {
              // Moving VMs needs the agent channel and the migration flow; until they exist
              // maintenance is refused rather than pretending the VMs moved.
              throw new HkError('HOST.1001', `${hostRef(host)} still has ${vms.length} VMs (${vms.slice(0, 5).map((v) => v.uuid).join(', ')}); VM migration is not available in this controller yet, stop them first`);
            }
          },
        },
        {
          name: 'enter-maintenance',
          run: async () => {
            await this.repo.transaction((tx) => this.applyStateEvent(tx, uuid, 'maintain'));
          },
        },
      ];
      await runFlow(`maintain-host-${uuid}`, steps, ctx, this.log, (current, total, step) =>
        job?.progress({ current, total, step }),
      );
      return this.mustGet(uuid);
    });
  }
}
