/**
 * One image's deadline: `expire` runs once `ms` of the download's own time have passed.
 * The time it spends waiting for its share of memory (lib/download/byte-budget.ts) is not
 * its own: it is paused meanwhile, as the wait in the queue before it started is not
 * counted either.
 */
export interface Deadline {
  /** ms left before it expires */
  left (): number
  /** stops the clock (nothing happens if it is stopped already or cleared) */
  pause (): void
  /** starts the clock again with what was left */
  resume (): void
  /** the download is over: never expires */
  clear (): void
}

export function startDeadline (ms: number, expire: () => void): Deadline {
  let remaining = ms
  let since = performance.now()
  let timer: NodeJS.Timeout | undefined = setTimeout(expire, ms)
  let paused = false
  let cleared = false
  return {
    left: () => paused ? remaining : remaining - (performance.now() - since),
    pause () {
      if (paused || cleared) return
      paused = true
      remaining -= performance.now() - since
      clearTimeout(timer)
    },
    resume () {
      if (!paused || cleared) return
      paused = false
      since = performance.now()
      timer = setTimeout(expire, Math.max(0, remaining))
    },
    clear () {
      cleared = true
      clearTimeout(timer)
      timer = undefined
    }
  }
}
