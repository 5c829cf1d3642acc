/**
 * Time, injected (STYLE.md 3), shared by the controller and the agent (which may not import
 * each other). Domain code asks a Clock for the time and for timers; tests pass
 * test/fakes/clock.ts and move time instead of sleeping.
 */
export interface Clock {
  now(): number;
  /** Calls `fn` after `ms`; the returned function cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const t = setTimeout(fn, ms);
    // Timers (heartbeats, retries, sweeps) must never keep a stopping process alive.
    t.unref();
    return () => clearTimeout(t);
  },
};

/** Resolves after `ms` on `clock`; rejects at once with `signal.reason` when aborted. */
export function sleep(clock: Clock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      cancel();
      reject(signal!.reason);
    };
    const cancel = clock.setTimer(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
