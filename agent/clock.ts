/**
 * Time, injected (STYLE.md 3). The agent never calls Date.now() or setTimeout directly in
 * its logic: it asks a Clock, so tests move a fake clock instead of sleeping. Same shape as
 * the controller's clock (agent/ may not import controller/), so test/fakes/clock.ts fits.
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
    // An agent's timers (heartbeats, retries) must never keep a stopping process alive.
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
