/**
 * Time, injected (STYLE.md 3). Domain code asks a Clock for the time and a timer; tests pass
 * a FakeClock (test/fakes/clock.ts) and move time instead of sleeping.
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
    // Timers must never keep a stopping process alive.
    t.unref?.();
    return () => clearTimeout(t);
  },
};
