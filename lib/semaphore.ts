/**
 * A counting semaphore with a FIFO queue that can be emptied at once. Hand-written because
 * it is this small and `rejectAll` settles every waiter with one call, where a limiter that
 * merely drops its queue would leave them without an answer. The password verifier limits
 * argon2 with it. (The image fetcher's downloads are limited by download/byte-budget.ts,
 * which adds a memory budget to a count.)
 */
export function createSemaphore (limit: number) {
  let active = 0
  // waiters[head..] wait in order; the slot is handed over directly, so `active` does not change
  let waiters: Array<{ resolve: () => void, reject: (reason: unknown) => void }> = []
  let head = 0
  return {
    /** Resolves when a slot is free (at once while fewer than `limit` are held), in call order. */
    acquire (): Promise<void> {
      if (active < limit) {
        active++
        return Promise.resolve()
      }
      return new Promise<void>((resolve, reject) => { waiters.push({ resolve, reject }) })
    },
    /** Gives a slot back: to the longest waiter, if any. */
    release (): void {
      if (head < waiters.length) {
        const next = waiters[head]!
        waiters[head++] = undefined!
        if (head === waiters.length) {
          waiters = []
          head = 0
        }
        next.resolve()
      } else {
        active--
      }
    },
    /** slots held right now */
    get held (): number { return active },
    /** callers waiting for a slot right now */
    get waiting (): number { return waiters.length - head },
    /** Rejects every waiter with `reason`; slots already held stay held until released. */
    rejectAll (reason: unknown): void {
      const queued = waiters.slice(head)
      waiters = []
      head = 0
      for (const waiter of queued) waiter.reject(reason)
    }
  }
}

export type Semaphore = ReturnType<typeof createSemaphore>
