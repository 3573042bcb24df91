/**
 * Records a dump's outcomes as they happen, in batches: a write starts once `maxBatch`
 * outcomes wait or the oldest has waited `maxDelayMs`, whichever comes first, and writes
 * up to `maxBatch` of them in one call (one multi-row insert). One write at a time, in the
 * order the outcomes came. A failed write puts its outcomes back in front and is tried
 * again after a back-off, so none is lost; `flush()`, at the end of a dump, writes
 * everything still waiting and gives up only after `attempts` failures in a row.
 *
 * Hand-written: a batching queue is a few lines here, and the general ones (of loggers,
 * metrics clients) neither retry a failed batch in order nor say when a batch is durable.
 */
import { setTimeout as sleep } from 'node:timers/promises'

export interface OutcomeRecorderOptions<T> {
  /** writes one batch; rejects when it could not (the batch is then tried again) */
  write: (batch: T[]) => Promise<void>
  /** a write starts once this many outcomes wait [500] */
  maxBatch?: number
  /** … or once the oldest has waited this long, in ms [250] */
  maxDelayMs?: number
  /** failed writes in a row after which flush() gives up [4] */
  attempts?: number
  /** wait after the first failed write, doubling with each next one, at most 5 s [200 ms] */
  retryDelayMs?: number
  /** told of each failed write */
  onError?: (error: unknown) => void
}

const MAX_BACKOFF_MS = 5000

export function createOutcomeRecorder<T> (options: OutcomeRecorderOptions<T>) {
  // 500 rather than fewer: at full speed (P1 in BENCHMARKS.md) each write's fixed cost
  // (a transaction of four statements) counted; the time bound still keeps progress fresh
  const maxBatch = options.maxBatch ?? 500
  const maxDelayMs = options.maxDelayMs ?? 250
  const attempts = options.attempts ?? 4
  const retryDelayMs = options.retryDelayMs ?? 200
  let waiting: Array<{ value: T, at: number }> = []
  let writing: Promise<void> | undefined
  let timer: NodeJS.Timeout | undefined
  let failures = 0
  let lastError: unknown
  let recorded = 0
  let flushing = false
  let stopped = false

  const backoff = (failed: number): number => Math.min(MAX_BACKOFF_MS, retryDelayMs * 2 ** (failed - 1))

  function clearTimer (): void {
    clearTimeout(timer)
    timer = undefined
  }

  /** Starts a write of the oldest outcomes; resolves with whether it succeeded. */
  function writeBatch (): Promise<boolean> {
    const batch = waiting.splice(0, maxBatch)
    // through a promise, so that a write that throws at once counts as a failed one
    const attempt = Promise.resolve(batch.map((entry) => entry.value)).then(options.write).then(() => {
      failures = 0
      recorded += batch.length
      return true
    }, (error: unknown) => {
      failures++
      lastError = error
      waiting = batch.concat(waiting)
      options.onError?.(error)
      return false
    })
    writing = attempt.then(() => {
      writing = undefined
      if (!flushing) schedule()
    })
    return attempt
  }

  /** Resolves once no write is in flight. */
  async function writeFinished (): Promise<void> {
    for (let current = writing; current !== undefined; current = writing) await current
  }

  /** Starts a write now, or arms the timer for when one is due. */
  function schedule (): void {
    if (stopped || writing !== undefined || waiting.length === 0) return
    const due = failures > 0
      ? backoff(failures)
      : waiting.length >= maxBatch ? 0 : maxDelayMs - (performance.now() - waiting[0]!.at)
    if (due <= 0) {
      clearTimer()
      void writeBatch()
    } else {
      timer ??= setTimeout(() => {
        timer = undefined
        if (!stopped && !flushing && writing === undefined && waiting.length > 0) void writeBatch()
      }, due)
    }
  }

  return {
    /** Takes one outcome to record. */
    add (value: T): void {
      if (stopped) return
      waiting.push({ value, at: performance.now() })
      if (!flushing && (timer === undefined || waiting.length >= maxBatch)) schedule()
    },

    /**
     * Writes every outcome added so far, then resolves; rejects with the last error after
     * `attempts` failed writes in a row (the outcomes stay waiting). Resolves at once when stopped.
     */
    async flush (): Promise<void> {
      flushing = true
      clearTimer()
      try {
        await writeFinished()
        for (let failed = 0; ;) {
          // stop() may come from elsewhere while this waits
          if (stopped || waiting.length === 0) return
          if (failed > 0) await sleep(backoff(failed))
          if (!stopped && !await writeBatch() && ++failed >= attempts) throw lastError
          await writeFinished()
        }
      } finally {
        flushing = false
      }
    },

    /** No more writes: what waits is dropped (a run that lost its dump records nothing more). */
    stop (): void {
      stopped = true
      clearTimer()
    },

    /** outcomes written so far */
    get recorded (): number { return recorded },
    /** outcomes not written yet */
    get waiting (): number { return waiting.length }
  }
}

export type OutcomeRecorder<T> = ReturnType<typeof createOutcomeRecorder<T>>
