/**
 * API jobs (ZStack's api-jobs): every create, action and delete is a job with an id, a
 * status, progress and a result, kept in the store so a client can poll it and a restart
 * does not lose it.
 *
 * Instant work (a few store writes) runs inside one transaction that also records the
 * finished job, so when the 202 goes out the change and its job are both on disk. Long work
 * (talking to agents) records a Running job first, answers 202, and records the outcome
 * when done. A job still Running when the controller starts was cut by a restart: it is
 * marked failed. Finished jobs expire after `ttlMs` (ZStack: 3 hours).
 */
import { type ErrorBody, HkError, invalidArgument, toHkError } from '../../protocol/errors.ts';
import { isUuid, newUuid } from '../../protocol/values.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import type { Repository, Tx } from '../store/repository.ts';
import { recordEvent } from '../events.ts';

export type JobStatus = 'Running' | 'Succeeded' | 'Failed';

export interface JobProgress {
  current: number;
  total: number;
  step: string;
  message?: string;
  /** Per-item work in flight (maintenance: the VMs moving now and their targets). */
  items?: { uuid: string; name?: string; phase: string; target?: string }[];
}

export interface JobRow {
  uuid: string;
  apiName: string;
  status: JobStatus;
  progress?: JobProgress;
  /** The response body of a successful job. */
  result?: unknown;
  error?: ErrorBody;
  webHook?: string;
  /** The controller running the job (several controllers: controller/cluster/). */
  controllerUuid?: string;
  createDate: number;
  lastOpDate: number;
}

export interface JobHandle {
  readonly uuid: string;
  progress(p: JobProgress): Promise<void>;
}

export const JOB_TTL_MS = 3 * 3600 * 1000;

/**
 * Thrown by work that stops because the controller stops (a durable flow at a safe point):
 * the job stays Running, and the flow that owns it finishes it after the next start.
 */
export class WorkInterrupted extends Error {}

export class Jobs {
  private cancelSweep: (() => void) | undefined;
  private readonly running = new Set<Promise<unknown>>();

  /** Other housekeeping run on the same timer (expired sessions and tokens). */
  private readonly alsoSweep: (() => Promise<unknown>)[] = [];
  /** Told of every finished job after it commits (metrics); `err` is what the work threw. */
  private readonly finishHooks: ((job: JobRow, err?: unknown) => void)[] = [];
  /** This controller's member uuid (core sets it): written on the jobs it runs. */
  member: string | undefined;

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly ttlMs = JOB_TTL_MS,
    private readonly sweepMs = 10 * 60 * 1000,
  ) {}

  onSweep(fn: () => Promise<unknown>): void {
    this.alsoSweep.push(fn);
  }

  onFinish(fn: (job: JobRow, err?: unknown) => void): void {
    this.finishHooks.push(fn);
  }

  private finished(job: JobRow, err?: unknown): void {
    for (const fn of this.finishHooks) fn(job, err);
  }

  /**
   * Marks jobs cut by a restart as failed, except those `resumable` says a durable flow will
   * finish (controller/flows/runner.ts), and starts the expiry sweep.
   */
  async start(resumable: (job: JobRow) => boolean = () => false): Promise<void> {
    // Only our own: another controller's Running jobs are running there.
    await this.failCut((j) => !j.controllerUuid || j.controllerUuid === this.member, resumable, 'a controller restart');
    this.scheduleSweep();
  }

  /**
   * Several controllers: the Running jobs of members that are not live any more, except those
   * a durable flow finishes (taken over by runner.claimOrphans), are failed: they ran in the
   * memory of the controller that stopped. Checked again in the transaction.
   */
  async failOrphans(isLive: (member: string) => boolean, resumable: (job: JobRow) => boolean): Promise<number> {
    return this.failCut((j) => !!j.controllerUuid && j.controllerUuid !== this.member && !isLive(j.controllerUuid), resumable, 'the stop of the controller running it');
  }

  private async failCut(whose: (j: JobRow) => boolean, resumable: (job: JobRow) => boolean, why: string): Promise<number> {
    const cut = (await this.repo.all<JobRow>('job')).filter((j) => j.status === 'Running' && whose(j) && !resumable(j));
    if (cut.length === 0) return 0;
    const now = this.clock.now();
    const n = await this.repo.transaction(async (tx) => {
      let failed = 0;
      for (const j of cut) {
        const cur = await tx.get<JobRow>('job', j.uuid);
        if (cur?.status !== 'Running' || cur.controllerUuid !== j.controllerUuid) continue;
        await tx.update<JobRow>('job', j.uuid, {
          status: 'Failed', lastOpDate: now,
          error: new HkError('SYS.1000', `job[uuid:${j.uuid}, api:${j.apiName}] was cut by ${why} and cannot be resumed; run it again`).toBody(),
        });
        failed++;
      }
      return failed;
    });
    if (n > 0) this.log.warn({ jobs: n, why }, 'marked cut jobs as failed');
    return n;
  }

  private scheduleSweep(): void {
    this.cancelSweep = this.clock.setTimer(this.sweepMs, () => {
      void Promise.allSettled([this.sweep(), ...this.alsoSweep.map((f) => f())]).finally(() => this.scheduleSweep());
    });
  }

  /** Deletes finished jobs older than the TTL. */
  async sweep(): Promise<number> {
    const cutoff = this.clock.now() - this.ttlMs;
    const old = (await this.repo.all<JobRow>('job')).filter((j) => j.status !== 'Running' && j.lastOpDate < cutoff);
    if (old.length === 0) return 0;
    await this.repo.transaction(async (tx) => {
      for (const j of old) await tx.remove('job', j.uuid);
    });
    return old.length;
  }

  /** Checks a client-chosen id (X-Job-UUID) or makes one. */
  async newId(requested: string | undefined): Promise<string> {
    if (requested === undefined) return newUuid();
    if (!isUuid(requested)) throw invalidArgument(`header X-Job-UUID[${requested}] must be 32 lowercase hex digits`);
    if (await this.repo.get('job', requested)) throw invalidArgument(`header X-Job-UUID[${requested}] is already used by another job`);
    return requested;
  }

  async get(uuid: string): Promise<JobRow | undefined> {
    const job = await this.repo.get<JobRow>('job', uuid);
    if (!job) return undefined;
    if (job.status !== 'Running' && job.lastOpDate < this.clock.now() - this.ttlMs) return undefined;
    return job;
  }

  /**
   * Runs store-only work and records the finished job in the same transaction. Errors are
   * thrown to the caller (which answers 4xx) and leave no trace.
   */
  async instant(uuid: string, apiName: string, work: (tx: Tx) => Promise<unknown>, webHook?: string): Promise<JobRow> {
    const now = this.clock.now();
    const job = await this.repo.transaction(async (tx) => {
      const result = await work(tx);
      return tx.insert<JobRow>('job', {
        uuid, apiName, status: 'Succeeded', result, createDate: now, lastOpDate: now, ...(webHook ? { webHook } : {}),
      });
    });
    this.notify(job);
    this.finished(job);
    return job;
  }

  /**
   * Records a job that failed before any work (the request was refused: bad value, unknown
   * resource, wrong state). A job already recorded under that id keeps its own outcome.
   */
  async failed(uuid: string, apiName: string, err: HkError, webHook?: string): Promise<void> {
    const now = this.clock.now();
    const job = await this.repo.transaction(async (tx) => {
      if (await tx.get('job', uuid)) return undefined;
      return tx.insert<JobRow>('job', {
        uuid, apiName, status: 'Failed', error: err.toBody(), createDate: now, lastOpDate: now, ...(webHook ? { webHook } : {}),
      });
    });
    if (job) {
      this.notify(job);
      this.finished(job, err);
    }
  }

  /**
   * Records a Running job and starts `work` in the background; resolves once the job is
   * recorded. `work` reports progress through the handle and returns the response body.
   */
  async long(uuid: string, apiName: string, work: (job: JobHandle) => Promise<unknown>, webHook?: string, prepare?: (tx: Tx) => Promise<void>): Promise<JobRow> {
    const job = await this.record(uuid, apiName, webHook, prepare);
    this.attach(uuid, apiName, work);
    return job;
  }

  /** Records a Running job; `prepare` (e.g. recording the host being added) commits with it or not at all. */
  async record(uuid: string, apiName: string, webHook?: string, prepare?: (tx: Tx) => Promise<void>): Promise<JobRow> {
    const now = this.clock.now();
    return this.repo.transaction(async (tx) => {
      await prepare?.(tx);
      await recordEvent(tx, { type: 'JobStarted', resourceType: 'ApiJob', resourceUuid: uuid, resourceName: apiName, to: 'Running', message: `job[uuid:${uuid}, api:${apiName}] started` });
      return tx.insert<JobRow>('job', {
        uuid, apiName, status: 'Running', createDate: now, lastOpDate: now, ...(webHook ? { webHook } : {}), ...(this.member ? { controllerUuid: this.member } : {}),
      });
    });
  }

  /** Progress reporting for a Running job. */
  handle(uuid: string): JobHandle {
    return {
      uuid,
      progress: async (p) => {
        await this.repo.transaction((tx) => tx.update<JobRow>('job', uuid, { progress: p, lastOpDate: this.clock.now() }));
      },
    };
  }

  /**
   * Runs `work` for a recorded Running job (a new one, or one a restart cut that a durable
   * flow resumes) and records its outcome; `inTx` writes what must commit with that outcome
   * (a durable flow's final status: a crash between the two would leave them disagreeing).
   */
  attach(uuid: string, apiName: string, work: (job: JobHandle) => Promise<unknown>, inTx?: (tx: Tx, done: JobRow) => Promise<void>): void {
    const handle = this.handle(uuid);
    const p = (async () => {
      let patch: Partial<JobRow>;
      let thrown: unknown;
      try {
        const result = await work(handle);
        patch = { status: 'Succeeded', result };
      } catch (err) {
        if (err instanceof WorkInterrupted) return;
        thrown = err;
        const e = toHkError(err);
        if (e.code === 'SYS.1000') this.log.error({ job: uuid, api: apiName, err: (err as Error)?.stack }, 'job failed unexpectedly');
        patch = { status: 'Failed', error: e.toBody() };
      }
      if (!(await this.repo.get('job', uuid))) return; // expired or removed meanwhile
      const done = await this.repo.transaction(async (tx) => {
        const row = await tx.update<JobRow>('job', uuid, { ...patch, lastOpDate: this.clock.now() });
        await inTx?.(tx, row);
        await recordEvent(tx, {
          type: 'JobFinished', resourceType: 'ApiJob', resourceUuid: uuid, resourceName: apiName, to: row.status,
          severity: row.status === 'Failed' ? 'warning' : 'info',
          message: `job[uuid:${uuid}, api:${apiName}] ${row.status === 'Failed' ? `failed: ${row.error?.details ?? row.error?.description}` : 'succeeded'}`,
        });
        return row;
      });
      this.log.info({ job: uuid, api: apiName, status: done.status, err: done.error?.details }, 'job finished');
      this.notify(done);
      this.finished(done, thrown);
    })().catch((err) => this.log.error({ job: uuid, err: (err as Error)?.message }, 'could not record job outcome'));
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
  }

  /** POSTs a finished job's answer to its X-Web-Hook, best effort. */
  private notify(job: JobRow): void {
    if (!job.webHook) return;
    const body = job.status === 'Succeeded' ? job.result ?? {} : { error: job.error };
    void fetch(job.webHook, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'X-Job-UUID': job.uuid },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    }).catch((err) => this.log.warn({ job: job.uuid, webHook: job.webHook, err: (err as Error).message }, 'web hook failed'));
  }

  /** Waits for background jobs (clean shutdown, tests). */
  async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  stop(): void {
    this.cancelSweep?.();
  }
}

/** Deletes the rows of `kind` whose expiredDate has passed (sessions, bootstrap tokens); returns how many. */
export async function sweepExpired(repo: Repository, kind: 'session' | 'bootstrapToken', now: number): Promise<number> {
  const dead = (await repo.all<{ uuid: string; expiredDate: number }>(kind)).filter((r) => r.expiredDate <= now).map((r) => r.uuid);
  if (dead.length > 0) await repo.transaction(async (tx) => { for (const uuid of dead) await tx.remove(kind, uuid); });
  return dead.length;
}
