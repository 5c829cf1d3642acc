/**
 * Multi-step operations as named steps (STYLE.md 5, ZStack's SimpleFlowChain): steps run in
 * order; when one fails, the ones already done are rolled back in reverse, a failing
 * rollback is logged and the next rollback still runs, and the original error surfaces.
 */
import type { Logger } from './log.ts';

export interface Step<C> {
  name: string;
  run(ctx: C): Promise<void>;
  rollback?(ctx: C): Promise<void>;
}

export class FlowError extends Error {
  constructor(readonly step: string, override readonly cause: unknown) {
    super(`step ${step} failed: ${cause instanceof Error ? cause.message : String(cause)}`);
  }
}

export async function runFlow<C>(
  name: string,
  steps: readonly Step<C>[],
  ctx: C,
  log: Logger,
  onStep?: (index: number, total: number, step: string) => void | Promise<void>,
): Promise<void> {
  const done: Step<C>[] = [];
  for (const [i, step] of steps.entries()) {
    log.debug({ flow: name, step: step.name }, `step ${i + 1}/${steps.length}`);
    await onStep?.(i + 1, steps.length, step.name);
    try {
      await step.run(ctx);
      done.push(step);
    } catch (err) {
      log.warn({ flow: name, step: step.name, err: (err as Error)?.message }, `step ${i + 1}/${steps.length} failed, rolling back`);
      for (const d of done.reverse()) {
        if (!d.rollback) continue;
        try {
          await d.rollback(ctx);
        } catch (rbErr) {
          log.error({ flow: name, step: d.name, err: (rbErr as Error)?.message }, 'rollback failed; continuing');
        }
      }
      throw err;
    }
  }
}
