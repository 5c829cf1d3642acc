/**
 * The durable flow runner (STYLE.md 5, 7, 14): the one mechanism for long work. A flow is
 * named steps `{name, run, rollback?}` whose position, context and per-item progress are a
 * stored row, so a controller that is killed (-9) or stopped resumes every unfinished flow
 * when it starts, from the last committed step, instead of failing its job. ZStack's
 * FlowChain keeps this in memory, which is why its hosts stay stuck in PreMaintenance.
 *
 * Rules for steps, because any of them may run again after a crash:
 * - every `run` and `rollback` is safe to repeat (it checks what is already done);
 * - progress inside a step is saved with `f.save(ctx)` (per-item states), and a resumed step
 *   reads it to continue rather than start over;
 * - a step that must know what happened outside (an agent call cut by the crash) asks the
 *   outside world (the agents) instead of trusting the context.
 * On failure the steps done are rolled back in reverse (status RollingBack, also resumed),
 * a failing rollback is logged and the next still runs, and the original error ends the job.
 * A clean stop aborts `f.signal`: the flow stops where it is and stays Running for the next
 * start.
 */
import { type ErrorBody, HkError, toHkError } from '../../protocol/errors.ts';
import { newUuid } from '../../protocol/values.ts';
import type { Clock } from '../clock.ts';
import type { Logger } from '../log.ts';
import { type JobHandle, type JobProgress, type JobRow, type Jobs, WorkInterrupted } from '../services/jobs.ts';
import type { Repository, Tx } from '../store/repository.ts';

/** What the runner needs to know of the other controllers (controller/cluster/cluster.ts). */
export interface FlowMembers {
  readonly uuid: string;
  isLive(member: string): boolean;
  ringOwner(key: string): string;
}

export type FlowStatus = 'Running' | 'RollingBack' | 'Succeeded' | 'Failed';

export interface FlowRow {
  uuid: string;
  kind: string;
  jobUuid: string | null;
  status: FlowStatus;
  /** Running: the index of the step to run next. RollingBack: how many steps are still to undo. */
  step: number;
  ctx: unknown;
  /** The error that started the rollback. */
  error?: ErrorBody;
  /** The controller running it (several controllers: another takes it over when that one stops). */
  controllerUuid?: string;
  /** The host it works on (ctx.hostUuid), whose holder takes it over. */
  hostUuid?: string;
  createDate: number;
  lastOpDate: number;
}

export interface FlowHandle<C> {
  readonly uuid: string;
  /** Aborted when the controller stops: leave the work where it is, it resumes at the next start. */
  readonly signal: AbortSignal;
  /** True when this run is a resume after a restart (the step may have run before). */
  readonly resumed: boolean;
  /** Persists the context now (per-item progress inside a long step). */
  save(ctx: C): Promise<void>;
  /**
   * Persists the context soon: writes are coalesced to one per COALESCE_MS, so a step that
   * moves 1,000 items does not write its whole context 2,000 times. Use it only for what a
   * resume can also derive from the store; `save()` for what it cannot.
   */
  saveSoon(ctx: C): void;
  progress(p: JobProgress): Promise<void>;
  /** Progress soon: coalesced like saveSoon (the latest one wins). */
  progressSoon(p: JobProgress): void;
}

export interface DurableStep<C> {
  name: string;
  run(ctx: C, f: FlowHandle<C>): Promise<void>;
  rollback?(ctx: C, f: FlowHandle<C>): Promise<void>;
}

export interface FlowDef<C> {
  kind: string;
  apiName: string;
  steps: readonly DurableStep<C>[];
  /** The job's result once every step ran. */
  result(ctx: C): Promise<unknown>;
  /** The job's error when the flow failed (default: the error as is). */
  failure?(err: HkError, ctx: C): HkError;
}

/** Thrown out of a step when the controller is stopping: not a failure, nothing rolls back. */
export class FlowStopped extends WorkInterrupted {
  constructor() {
    super('the controller is stopping; the flow resumes at the next start');
  }
}

/** At most one coalesced context or progress write per this many ms. */
export const COALESCE_MS = 200;

/**
 * Runs `write(latest)` at most once per `ms`: a call while a write is pending only replaces
 * the value; `flush()` writes the pending value now and waits for it.
 */
export class Coalescer<T> {
  private pending: { v: T } | undefined;
  private running: Promise<void> | undefined;
  private cancel: (() => void) | undefined;
  constructor(private readonly clock: Clock, private readonly ms: number, private readonly write: (v: T) => Promise<void>, private readonly onError: (e: unknown) => void) {}
  push(v: T): void {
    this.pending = { v };
    this.cancel ??= this.clock.setTimer(this.ms, () => {
      this.cancel = undefined;
      void this.flush();
    });
  }
  async flush(): Promise<void> {
    this.cancel?.();
    this.cancel = undefined;
    await this.running;
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    this.running = this.write(p.v).catch(this.onError).finally(() => (this.running = undefined));
    await this.running;
  }
}

export class FlowRunner {
  private readonly defs = new Map<string, FlowDef<unknown>>();
  private readonly abort = new AbortController();
  private readonly active = new Map<string, Promise<unknown>>();

  constructor(
    private readonly repo: Repository,
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly jobs: Jobs,
    private readonly members?: FlowMembers,
  ) {}

  define<C>(def: FlowDef<C>): void {
    this.defs.set(def.kind, def as FlowDef<unknown>);
  }

  get stopping(): boolean {
    return this.abort.signal.aborted;
  }

  /**
   * Records the Running job and the flow in one transaction (with `prepare`'s writes), then
   * runs the flow in the background. Resolves once both are committed.
   */
  async start<C>(kind: string, ctx: C, job: { uuid: string; webHook?: string }, prepare?: (tx: Tx, flowUuid: string) => Promise<void>): Promise<JobRow> {
    const def = this.def(kind);
    const now = this.clock.now();
    const flowUuid = newUuid();
    const hostUuid = (ctx as { hostUuid?: unknown } | null)?.hostUuid;
    const row = await this.jobs.record(job.uuid, def.apiName, job.webHook, async (tx) => {
      await prepare?.(tx, flowUuid);
      await tx.insert<FlowRow>('flow', {
        uuid: flowUuid, kind, jobUuid: job.uuid, status: 'Running', step: 0, ctx, createDate: now, lastOpDate: now,
        ...(this.members ? { controllerUuid: this.members.uuid } : {}), ...(typeof hostUuid === 'string' ? { hostUuid } : {}),
      });
    });
    this.launch(flowUuid, def, false);
    return row;
  }

  /** Jobs that a flow will finish: the restart must not fail them. */
  async resumableJobs(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const f of await this.repo.all<FlowRow>('flow')) {
      if ((f.status === 'Running' || f.status === 'RollingBack') && f.jobUuid && this.defs.has(f.kind)) out.add(f.jobUuid);
    }
    return out;
  }

  /**
   * Resumes every unfinished flow of this controller (at start-up), then takes over those of
   * controllers that are not live; returns how many.
   */
  async resumeAll(): Promise<number> {
    let n = 0;
    const me = this.members?.uuid;
    for (const f of await this.repo.all<FlowRow>('flow')) {
      if (f.status !== 'Running' && f.status !== 'RollingBack') continue;
      if (f.controllerUuid && f.controllerUuid !== me) continue;
      const def = this.defs.get(f.kind);
      if (!def || this.active.has(f.uuid)) continue;
      this.log.warn({ flow: f.uuid, kind: f.kind, step: f.step, status: f.status }, 'resuming a flow cut by a restart');
      this.launch(f.uuid, def, true);
      n++;
    }
    return n + (await this.claimOrphans());
  }

  /**
   * Several controllers: unfinished flows of members that are not live, which the ring gives
   * to this one (by their host, else by their own uuid), are claimed in a transaction that
   * checks nobody claimed them first, and resumed here. Returns how many.
   */
  async claimOrphans(): Promise<number> {
    const m = this.members;
    if (!m) return 0;
    let n = 0;
    for (const f of await this.repo.all<FlowRow>('flow')) {
      if ((f.status !== 'Running' && f.status !== 'RollingBack') || !f.controllerUuid || f.controllerUuid === m.uuid) continue;
      if (m.isLive(f.controllerUuid) || m.ringOwner(f.hostUuid ?? f.uuid) !== m.uuid) continue;
      const def = this.defs.get(f.kind);
      if (!def || this.active.has(f.uuid)) continue;
      const claimed = await this.repo.transaction(async (tx) => {
        const cur = await tx.get<FlowRow>('flow', f.uuid);
        if (!cur || cur.controllerUuid !== f.controllerUuid || (cur.status !== 'Running' && cur.status !== 'RollingBack')) return false;
        await tx.update<FlowRow>('flow', f.uuid, { controllerUuid: m.uuid, lastOpDate: this.clock.now() });
        if (cur.jobUuid && (await tx.get<JobRow>('job', cur.jobUuid))) await tx.update<JobRow>('job', cur.jobUuid, { controllerUuid: m.uuid });
        return true;
      });
      if (!claimed) continue;
      this.log.warn({ flow: f.uuid, kind: f.kind, from: f.controllerUuid, step: f.step }, 'taking over a flow of a controller that stopped');
      this.launch(f.uuid, def, true);
      n++;
    }
    return n;
  }

  /** Unfinished flows of a kind whose context matches (e.g. the maintenance of one host). */
  async unfinished<C>(kind: string, match: (ctx: C) => boolean): Promise<(FlowRow & { ctx: C })[]> {
    return (await this.repo.all<FlowRow>('flow')).filter(
      (f): f is FlowRow & { ctx: C } => f.kind === kind && (f.status === 'Running' || f.status === 'RollingBack') && match(f.ctx as C),
    );
  }

  /** A flow that is still to finish (running here, or to be resumed). */
  async isLive(flowUuid: string): Promise<boolean> {
    const f = await this.repo.get<FlowRow>('flow', flowUuid);
    return !!f && (f.status === 'Running' || f.status === 'RollingBack');
  }

  /** Waits for a flow running in this process to end (tests, cancel). */
  async settled(flowUuid: string): Promise<void> {
    await this.active.get(flowUuid)?.catch(() => undefined);
  }

  private def(kind: string): FlowDef<unknown> {
    const def = this.defs.get(kind);
    if (!def) throw new Error(`no flow kind ${kind}`);
    return def;
  }

  private launch(flowUuid: string, def: FlowDef<unknown>, resumed: boolean): void {
    const body = async (job?: JobHandle) => this.drive(flowUuid, def, resumed, job);
    /** The flow's final status, written in the same transaction as its job's outcome. */
    const finalize = async (tx: Tx, ok: boolean, error?: ErrorBody) => {
      if (!(await tx.get('flow', flowUuid))) return;
      await tx.update<FlowRow>('flow', flowUuid, { status: ok ? 'Succeeded' : 'Failed', ...(error ? { error } : {}), lastOpDate: this.clock.now() });
    };
    const p = (async () => {
      const row = await this.repo.get<FlowRow>('flow', flowUuid);
      const jobUuid = row?.jobUuid ?? null;
      if (jobUuid) {
        await new Promise<void>((resolve) => {
          this.jobs.attach(jobUuid, def.apiName, async (job) => {
            try {
              return await body(job);
            } finally {
              resolve();
            }
          }, (tx, done) => finalize(tx, done.status === 'Succeeded', done.error));
        });
      } else {
        try {
          await body();
          await this.repo.transaction((tx) => finalize(tx, true));
        } catch (err) {
          if (err instanceof FlowStopped) return;
          this.log.warn({ flow: flowUuid, err: (err as Error).message }, 'flow failed');
          await this.repo.transaction((tx) => finalize(tx, false, toHkError(err).toBody()));
        }
      }
    })().catch((err) => this.log.error({ flow: flowUuid, err: (err as Error)?.message }, 'flow could not run'));
    this.active.set(flowUuid, p);
    void p.finally(() => this.active.delete(flowUuid));
  }

  /** Runs (or resumes) one flow to its end; the job's result, or throws the job's error. */
  private async drive(flowUuid: string, def: FlowDef<unknown>, resumed: boolean, job?: JobHandle): Promise<unknown> {
    const row = await this.repo.get<FlowRow>('flow', flowUuid);
    if (!row) throw new HkError('SYS.1000', `flow[uuid:${flowUuid}] is gone`);
    let ctx = row.ctx;
    const steps = def.steps;
    const log = this.log.child({ flow: flowUuid, kind: def.kind });
    const onError = (e: unknown) => log.warn({ err: (e as Error)?.message }, 'could not record flow progress');
    const ctxWriter = new Coalescer<unknown>(this.clock, COALESCE_MS, (c) => this.patch(flowUuid, { ctx: c }), onError);
    const progressWriter = new Coalescer<JobProgress>(this.clock, COALESCE_MS, async (p) => job?.progress(p), onError);
    const handle: FlowHandle<unknown> = {
      uuid: flowUuid,
      signal: this.abort.signal,
      resumed,
      save: async (c) => {
        ctx = c;
        await ctxWriter.flush();
        await this.patch(flowUuid, { ctx: c });
      },
      saveSoon: (c) => {
        ctx = c;
        ctxWriter.push(c);
      },
      progress: async (p) => {
        await progressWriter.flush();
        await job?.progress(p);
      },
      progressSoon: (p) => progressWriter.push(p),
    };
    const flushAll = () => Promise.all([ctxWriter.flush(), progressWriter.flush()]);
    let undo = row.status === 'RollingBack' ? row.step : -1;
    let error: HkError | undefined = row.error ? new HkError(row.error.code, row.error.details) : undefined;

    if (undo < 0) {
      for (let i = row.step; i < steps.length; i++) {
        const step = steps[i]!;
        if (this.stopping) throw new FlowStopped();
        log.debug({ step: step.name }, `step ${i + 1}/${steps.length}`);
        await handle.progress({ current: i + 1, total: steps.length, step: step.name });
        try {
          await step.run(ctx, handle);
        } catch (err) {
          if (err instanceof FlowStopped || this.stopping) throw new FlowStopped();
          error = toHkError(err);
          log.warn({ step: step.name, err: error.details }, `step ${i + 1}/${steps.length} failed, rolling back`);
          undo = i; // steps 0..i-1 are done
          await flushAll();
          await this.patch(flowUuid, { status: 'RollingBack', step: undo, ctx, error: error.toBody() });
          break;
        }
        await flushAll();
        await this.patch(flowUuid, { step: i + 1, ctx });
      }
    }
    if (undo >= 0) {
      for (let i = undo - 1; i >= 0; i--) {
        const step = steps[i]!;
        if (this.stopping) throw new FlowStopped();
        if (step.rollback) {
          try {
            await step.rollback(ctx, handle);
          } catch (err) {
            if (this.stopping) throw new FlowStopped();
            log.error({ step: step.name, err: (err as Error)?.message }, 'rollback failed; continuing');
          }
        }
        await this.patch(flowUuid, { step: i });
      }
      // The final status is written with the job's outcome (launch: finalize).
      throw def.failure ? def.failure(error!, ctx) : error!;
    }
    try {
      return await def.result(ctx);
    } catch (err) {
      // The work is done but its answer cannot be built (the host was deleted, say): the job
      // fails, and the flow is finished rather than resumed at every start.
      throw toHkError(err);
    }
  }

  private async patch(flowUuid: string, p: Partial<FlowRow>): Promise<void> {
    await this.repo.transaction((tx) => tx.update<FlowRow>('flow', flowUuid, { ...p, lastOpDate: this.clock.now() }));
  }

  /** Removes finished flows older than `ttlMs` (on the jobs' housekeeping timer). */
  async sweep(ttlMs: number): Promise<number> {
    const cutoff = this.clock.now() - ttlMs;
    const old = (await this.repo.all<FlowRow>('flow')).filter((f) => (f.status === 'Succeeded' || f.status === 'Failed') && f.lastOpDate < cutoff);
    if (old.length > 0) await this.repo.transaction(async (tx) => { for (const f of old) await tx.remove('flow', f.uuid); });
    return old.length;
  }

  /** Stops every flow at its next safe point; they stay Running for the next start. */
  async stop(): Promise<void> {
    this.abort.abort(new FlowStopped());
    await Promise.allSettled([...this.active.values()]);
  }
}
