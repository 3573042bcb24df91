/**
 * What lets a download into flight: a free place among `maxHolders` (connections, sockets,
 * timers: cheap, so the count can be large) and its share of `limitBytes`, the memory the
 * downloads in flight may hold between them. A download reserves a little when it starts
 * and resizes its reservation once it knows what it will hold (the fetcher decides how much:
 * plugins/image-fetcher.ts), so hundreds of small or slow images run at once while a few
 * huge ones take the budget in turn.
 *
 * - Strictly in order: a new download waits while an earlier one waits, so a large one is
 *   never overtaken for ever by small ones.
 * - Downloads in flight that wait to grow go before new ones: finishing them is what frees
 *   memory.
 * - No request is larger than the whole budget (it is cut to `limitBytes`), so a download
 *   alone always fits; and when every download in flight is waiting to grow, none could
 *   free anything, so the oldest of them grows anyway. The budget is then exceeded by that
 *   one download's growth, until it finishes. Nothing waits on itself: no deadlock.
 * - `rejectAll` settles every waiter at once (the fetcher's close()); a waiter's own signal
 *   takes it out of the queue alone (a dump stopped, a deadline).
 */
export interface Lease {
  /** bytes this download holds in the budget right now */
  readonly bytes: number
  /**
   * Changes the reservation to `bytes` (at most the whole budget): at once when it shrinks
   * or fits, otherwise after the downloads ahead; rejects with the signal's reason when
   * `signal` aborts first, with the reservation unchanged.
   */
  resize (bytes: number, signal?: AbortSignal): Promise<void>
  /** Gives everything back; the lease is spent (later calls do nothing). */
  release (): void
}

interface Waiter {
  lease: LeaseState
  bytes: number
  resolve: () => void
  reject: (reason: unknown) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

interface LeaseState extends Lease {
  held: number
  released: boolean
  growing: boolean
}

export function createByteBudget (limitBytes: number, maxHolders: number) {
  let used = 0
  let peak = 0
  let holders = 0
  // holders waiting to grow: they cannot free anything until they are let through
  let stuck = 0
  // two FIFO queues: growing holders first, then new downloads
  const growers: Waiter[] = []
  const arrivals: Waiter[] = []

  const clamp = (bytes: number): number => Math.min(Math.max(0, Math.ceil(bytes)), limitBytes)

  function grant (waiter: Waiter): void {
    waiter.signal?.removeEventListener('abort', waiter.onAbort!)
    const { lease } = waiter
    used += waiter.bytes - lease.held
    peak = Math.max(peak, used)
    lease.held = waiter.bytes
    waiter.resolve()
  }

  // Lets through, in order, every waiter the budget now allows.
  function pump (): void {
    while (growers.length > 0) {
      const next = growers[0]!
      const fits = used - next.lease.held + next.bytes <= limitBytes
      if (!fits && stuck < holders) return // someone in flight will free memory
      growers.shift()
      next.lease.growing = false
      stuck--
      grant(next)
    }
    while (arrivals.length > 0) {
      const next = arrivals[0]!
      if (holders >= maxHolders || used + next.bytes > limitBytes) return
      arrivals.shift()
      holders++
      grant(next)
    }
  }

  function remove (queue: Waiter[], waiter: Waiter): boolean {
    const at = queue.indexOf(waiter)
    if (at < 0) return false
    queue.splice(at, 1)
    return true
  }

  function wait (queue: Waiter[], lease: LeaseState, bytes: number, signal: AbortSignal | undefined): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { lease, bytes, resolve, reject, signal, onAbort: undefined }
      if (signal !== undefined) {
        waiter.onAbort = () => {
          if (!remove(queue, waiter)) return
          if (queue === growers) { lease.growing = false; stuck-- }
          reject(signal.reason)
          // the one that left may have been holding the line
          pump()
        }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      queue.push(waiter)
    })
  }

  function newLease (): LeaseState {
    const lease: LeaseState = {
      held: 0,
      released: false,
      growing: false,
      get bytes () { return lease.held },
      resize (bytes: number, signal?: AbortSignal): Promise<void> {
        if (lease.released) return Promise.resolve()
        if (signal?.aborted === true) return Promise.reject(signal.reason)
        const want = clamp(bytes)
        if (want <= lease.held || (growers.length === 0 && used - lease.held + want <= limitBytes)) {
          const shrinks = want < lease.held
          used += want - lease.held
          peak = Math.max(peak, used)
          lease.held = want
          if (shrinks) pump()
          return Promise.resolve()
        }
        lease.growing = true
        stuck++
        const waiting = wait(growers, lease, want, signal)
        // this holder may have been the last one that could free anything
        pump()
        return waiting
      },
      release (): void {
        if (lease.released) return
        lease.released = true
        used -= lease.held
        lease.held = 0
        holders--
        pump()
      }
    }
    return lease
  }

  return {
    /** A lease of `bytes` (at most the whole budget), when a place and the bytes are free, in call order. */
    acquire (bytes: number, signal?: AbortSignal): Promise<Lease> {
      if (signal?.aborted === true) return Promise.reject(signal.reason)
      const lease = newLease()
      const want = clamp(bytes)
      if (arrivals.length === 0 && growers.length === 0 && holders < maxHolders && used + want <= limitBytes) {
        holders++
        used += want
        peak = Math.max(peak, used)
        lease.held = want
        return Promise.resolve(lease)
      }
      return wait(arrivals, lease, want, signal).then(() => lease)
    },
    /** Rejects every waiter, new and growing, with `reason`; leases already given stay until released. */
    rejectAll (reason: unknown): void {
      const queued = [...growers, ...arrivals]
      stuck -= growers.length
      growers.length = 0
      arrivals.length = 0
      for (const waiter of queued) {
        waiter.lease.growing = false
        waiter.signal?.removeEventListener('abort', waiter.onAbort!)
        waiter.reject(reason)
      }
    },
    /** downloads holding a lease right now */
    get holders (): number { return holders },
    /** bytes reserved right now */
    get usedBytes (): number { return used },
    /** the most bytes reserved at once so far */
    get peakBytes (): number { return peak },
    /** downloads waiting to start, and waiting to grow */
    get waiting (): { arrivals: number, growers: number } { return { arrivals: arrivals.length, growers: growers.length } },
    limitBytes,
    maxHolders
  }
}

export type ByteBudget = ReturnType<typeof createByteBudget>
