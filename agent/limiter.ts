/** At most `n` tasks at once (registration in a fleet, facts refresh of many agents). */
export interface Limiter {
  run<T>(fn: () => Promise<T>): Promise<T>;
}

export function createLimiter(n: number): Limiter {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async run<T>(fn: () => Promise<T>): Promise<T> {
      // A finishing task hands its slot straight to the next waiter, so `active` never overshoots.
      if (active < n) active++;
      else await new Promise<void>((r) => waiting.push(r));
      try {
        return await fn();
      } finally {
        const next = waiting.shift();
        if (next) next();
        else active--;
      }
    },
  };
}

export const unlimited: Limiter = { run: (fn) => fn() };
