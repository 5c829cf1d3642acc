/**
 * Keyed serial queues (STYLE.md 6, ZStack's per-resource sync signatures): work submitted
 * under the same key runs one at a time in order; different keys run concurrently.
 */
export class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }

  /** Number of keys with queued or running work. */
  get size(): number {
    return this.tails.size;
  }
}
