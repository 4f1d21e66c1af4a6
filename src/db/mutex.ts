/**
 * A first-come first-served async lock. SQLite has one connection per
 * process here; an async transaction holds this lock from BEGIN to COMMIT so
 * no other query can slip into the open transaction.
 */
export class Mutex {
  #locked = false;
  #waiters: Array<() => void> = [];

  get locked(): boolean {
    return this.#locked;
  }

  /** Runs `fn` once every earlier holder has finished; releases even when `fn` throws. */
  async run<T>(fn: () => T | Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await fn();
    } finally {
      this.#release();
    }
  }

  #acquire(): Promise<void> {
    if (!this.#locked) {
      this.#locked = true;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Hands the lock straight to the next waiter, so it never looks free in between. */
  #release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#locked = false;
  }
}
