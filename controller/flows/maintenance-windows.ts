/**
 * Maintenance windows an admin schedules (in the spirit of ZStack's scheduler jobs): at each
 * firing of a cron expression the window's hosts enter maintenance (the maintenance flow:
 * evacuate, then Maintenance); after durationMinutes they are enabled again, unless an admin
 * changed their state meanwhile.
 *
 * node-cron parses and validates the expression; the firing runs on the injected clock (one
 * timer for the earliest event of all windows), so tests move time instead of waiting, and
 * the evaluation (protocol/cron.ts) honours the window's time zone or the controller's.
 *
 * Restarts: the windows and what each did are rows. At start a window whose firing was
 * missed while no controller ran starts at once when it is still within its duration, else
 * the firing is recorded as missed; an Active window whose end passed ends at once. Several
 * controllers on one database each arm every window; a firing runs once, on the controller
 * whose transaction moves the window from Waiting to Active (the others see it moved), and
 * its agent calls go to each host's holder (controller/cluster/).
 */
import cron from 'node-cron';
import { HkError, invalidArgument, notFound } from '../../protocol/errors.ts';
import { cronFields, type CronFields, isTimeZone, nextCronTime } from '../../protocol/cron.ts';
import type { HostRow, MaintenanceWindowRow } from '../../protocol/resources.ts';
import { newUuid } from '../../protocol/values.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import type { Hosts } from '../services/hosts.ts';
import type { Repository, Tx } from '../store/repository.ts';
import type { HostOps } from './host-ops.ts';
import type { Maintenance } from './maintenance.ts';

/** A timer is never armed further out than this: a long wait is re-evaluated, never overflows. */
const MAX_TIMER_MS = 3_600_000;
/** Firings looked at when catching up after a long stop (an every-minute window over a week is 10,080). */
const CATCH_UP_LIMIT = 20_000;

export interface NewWindow {
  name: string;
  hostUuids: string[];
  cron: string;
  durationMinutes: number;
  timeZone?: string;
}

/** The controller's zone: TZ when set, else UTC (as dates are written). */
const controllerZone = () => process.env.TZ || 'UTC';

export function parseWindowCron(expression: string, field = 'params.cron'): CronFields {
  if (expression.trim().split(/\s+/).length !== 5) throw invalidArgument(`${field}[${expression}] must have five fields: minute hour day-of-month month day-of-week`);
  const v = cron.validateDetailed(expression);
  if (!v.valid) throw invalidArgument(`${field}[${expression}] is not a cron expression: ${v.errors.map((e) => `${e.field} ${e.message}`).join('; ')}`);
  try {
    return cronFields(cron.parse(expression), expression);
  } catch (err) {
    throw invalidArgument(`${field}: ${(err as Error).message}`);
  }
}

export class MaintenanceWindows {
  private cancel: (() => void) | undefined;
  private stopped = false;
  private ticking: Promise<void> | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly hosts: Hosts,
    private readonly maintenance: Maintenance,
    private readonly hostOps: () => HostOps,
  ) {}

  private zone(w: Pick<MaintenanceWindowRow, 'timeZone'>): string {
    return w.timeZone ?? controllerZone();
  }

  private next(w: Pick<MaintenanceWindowRow, 'cron' | 'timeZone'>, afterMs: number): number | null {
    try {
      return nextCronTime(parseWindowCron(w.cron), afterMs, this.zone(w));
    } catch {
      return null;
    }
  }

  /** Validates and records a window (in the caller's transaction); `arm()` after commit. */
  async create(tx: Tx, p: NewWindow): Promise<MaintenanceWindowRow> {
    parseWindowCron(p.cron);
    if (p.timeZone !== undefined && !isTimeZone(p.timeZone)) throw invalidArgument(`params.timeZone[${p.timeZone}] is not a time zone this controller knows (an IANA name like Europe/Berlin)`);
    const hostUuids = [...new Set(p.hostUuids)];
    for (const u of hostUuids) if (!(await tx.get('host', u))) throw invalidArgument(`params.hostUuids: host[uuid:${u}] does not exist`);
    const now = this.clock.now();
    const w: MaintenanceWindowRow = {
      uuid: newUuid(), name: p.name, hostUuids, cron: p.cron, durationMinutes: p.durationMinutes, timeZone: p.timeZone ?? null,
      state: 'Waiting', nextFireDate: null, lastFireDate: null, activeUntil: null, entered: [], missed: 0, lastMissedDate: null,
      createDate: now, lastOpDate: now,
    };
    w.nextFireDate = this.next(w, now);
    if (w.nextFireDate === null) throw invalidArgument(`params.cron[${p.cron}] never fires`);
    return tx.insert<MaintenanceWindowRow>('maintenanceWindow', w);
  }

  /** Ends a window that is active (its hosts enabled again), then removes it. */
  async delete(uuid: string): Promise<void> {
    const w = await this.repo.get<MaintenanceWindowRow>('maintenanceWindow', uuid);
    if (!w) throw notFound(`maintenance window[uuid:${uuid}] does not exist`);
    if (w.state === 'Active') await this.end(w);
    await this.repo.transaction((tx) => tx.remove('maintenanceWindow', uuid));
    this.arm();
  }

  /** At start: catch up on what happened while no controller ran, then arm the timer. */
  async start(): Promise<void> {
    const now = this.clock.now();
    for (const w of await this.repo.all<MaintenanceWindowRow>('maintenanceWindow')) {
      if (w.state === 'Active') {
        if ((w.activeUntil ?? 0) <= now) await this.end(w);
        continue;
      }
      // The last firing at or before now that this window has not seen.
      let last: number | null = null;
      let t = this.next(w, w.lastFireDate ?? w.createDate);
      for (let i = 0; t !== null && t <= now && i < CATCH_UP_LIMIT; i++) {
        last = t;
        t = this.next(w, t);
      }
      if (last === null) continue;
      const until = last + w.durationMinutes * 60_000;
      if (now < until) {
        this.log.warn({ window: w.uuid, firing: new Date(last).toISOString() }, 'maintenance window started late (its firing came while no controller ran)');
        await this.fire(w, last);
      } else {
        await this.repo.transaction((tx) => tx.update<MaintenanceWindowRow>('maintenanceWindow', w.uuid, {
          missed: w.missed + 1, lastMissedDate: last, lastFireDate: last, nextFireDate: this.next(w, now), lastOpDate: now,
        }));
        this.log.warn({ window: w.uuid, firing: new Date(last).toISOString() }, 'maintenance window missed: it was over before a controller ran');
      }
    }
    this.arm();
  }

  /** (Re)arms the one timer for the earliest firing or end among all windows. */
  arm(): void {
    if (this.stopped) return;
    this.cancel?.();
    this.cancel = undefined;
    void this.repo.all<MaintenanceWindowRow>('maintenanceWindow').catch((err) => {
      // A store error must not stop the windows for good: look again in a minute.
      this.log.warn({ err: (err as Error).message }, 'maintenance windows could not be read; retrying');
      this.cancel = this.clock.setTimer(60_000, () => this.arm());
      return [] as MaintenanceWindowRow[];
    }).then((all) => {
      if (this.stopped) return;
      const at = all.map((w) => (w.state === 'Active' ? w.activeUntil : w.nextFireDate)).filter((x): x is number => x !== null);
      if (at.length === 0) return;
      const delay = Math.max(0, Math.min(MAX_TIMER_MS, Math.min(...at) - this.clock.now()));
      this.cancel?.();
      this.cancel = this.clock.setTimer(delay, () => {
        this.cancel = undefined;
        this.ticking = this.tick().catch((err) => this.log.error({ err: (err as Error).message }, 'maintenance window tick failed')).finally(() => this.arm());
      });
    });
  }

  /** Fires every window whose time came and ends every window whose duration passed. */
  async tick(): Promise<void> {
    const now = this.clock.now();
    for (const w of await this.repo.all<MaintenanceWindowRow>('maintenanceWindow')) {
      if (w.state === 'Active' && (w.activeUntil ?? Infinity) <= now) await this.end(w);
      else if (w.state === 'Waiting' && w.nextFireDate !== null && w.nextFireDate <= now) await this.fire(w, w.nextFireDate);
    }
  }

  /**
   * Puts the window's hosts into maintenance (those that can go: Connected, not already in
   * it). Active is recorded first and each host is added to `entered` as its maintenance
   * starts, so a crash in between never leaves a host in maintenance that the window's end
   * would not enable again.
   */
  private async fire(w: MaintenanceWindowRow, firedAt: number): Promise<void> {
    const activeUntil = firedAt + w.durationMinutes * 60_000;
    // Compare and set: with several controllers on one database, each arms the window, and
    // the one whose transaction sees it still Waiting for this firing runs it; the others skip.
    const mine = await this.repo.transaction(async (tx) => {
      const cur = await tx.get<MaintenanceWindowRow>('maintenanceWindow', w.uuid);
      if (!cur || cur.state !== 'Waiting' || cur.nextFireDate !== w.nextFireDate) return false;
      await tx.update<MaintenanceWindowRow>('maintenanceWindow', w.uuid, {
        state: 'Active', lastFireDate: firedAt, activeUntil, entered: [], nextFireDate: this.next(w, activeUntil), lastOpDate: this.clock.now(),
      });
      return true;
    });
    if (!mine) return;
    let entered = 0;
    for (const uuid of w.hostUuids) {
      const h = await this.repo.get<HostRow>('host', uuid);
      if (!h) continue;
      if (h.state !== 'Enabled' && h.state !== 'Disabled') {
        this.log.info({ window: w.uuid, host: uuid, state: h.state }, 'maintenance window: host already in maintenance, left alone');
        continue;
      }
      try {
        this.hosts.checkStateEvent(h, 'maintain');
        // The host joins `entered` in the same transaction that records its maintenance.
        await this.maintenance.start(h, { uuid: newUuid() }, async (tx) => {
          const cur = await tx.get<MaintenanceWindowRow>('maintenanceWindow', w.uuid);
          if (cur) await tx.update<MaintenanceWindowRow>('maintenanceWindow', w.uuid, { entered: [...cur.entered, uuid] });
        });
        entered++;
      } catch (err) {
        this.log.warn({ window: w.uuid, host: uuid, err: (err as HkError).details ?? (err as Error).message }, 'maintenance window could not start maintenance of a host');
      }
    }
    this.log.info({ window: w.uuid, name: w.name, hosts: entered, until: new Date(activeUntil).toISOString() }, 'maintenance window started');
  }

  /**
   * Enables again the hosts the window put into maintenance and still in Maintenance (an
   * admin who changed one's state meanwhile keeps the last word); a host still evacuating is
   * enabled too, which cancels its evacuation.
   */
  private async end(w: MaintenanceWindowRow): Promise<void> {
    for (const uuid of w.entered) {
      const h = await this.repo.get<HostRow>('host', uuid);
      if (!h || (h.state !== 'Maintenance' && h.state !== 'PreMaintenance')) continue;
      try {
        const change = await this.hostOps().changeState(uuid, 'enable');
        if (change.kind === 'instant') {
          await this.hosts.queue.run(uuid, () => this.repo.transaction((tx) => change.run(tx)));
          change.after();
        }
      } catch (err) {
        this.log.warn({ window: w.uuid, host: uuid, err: (err as Error).message }, 'maintenance window could not enable a host at its end');
      }
    }
    await this.repo.transaction(async (tx) => {
      if (!(await tx.get('maintenanceWindow', w.uuid))) return;
      await tx.update<MaintenanceWindowRow>('maintenanceWindow', w.uuid, {
        state: 'Waiting', activeUntil: null, entered: [], nextFireDate: this.next(w, this.clock.now()), lastOpDate: this.clock.now(),
      });
    });
    this.log.info({ window: w.uuid, name: w.name }, 'maintenance window ended');
  }

  /** Waits for a tick the timer started (tests: a firing another tick skipped runs there). */
  async idle(): Promise<void> {
    await this.ticking;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancel?.();
    await this.ticking;
  }
}
