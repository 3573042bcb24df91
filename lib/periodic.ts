/**
 * A task run in the background every so often: retention's sweep, the dumps' heartbeat and
 * their recovery sweep. Never two runs at once: a tick that finds the last run still going
 * starts none (a run slowed down by the database must not pile others up behind it). A run
 * that fails is reported and the next one runs on time. Its timer never keeps the process
 * alive, and stopping waits for the run in flight, so that nothing runs on after its owner
 * closed what the task uses.
 */
export interface PeriodicOptions {
  /** from one tick to the next, in ms */
  everyMs: number
  /** each wait is drawn from everyMs ± this fraction of it, so that instances started together drift apart (default 0) */
  jitter?: number
  /** one run; `signal` aborts once stop() is called, for a long run to end early */
  run: (signal: AbortSignal) => unknown
  /** told of a run that threw or rejected (it must not throw itself) */
  onError: (error: unknown) => void
}

export function createPeriodic (options: PeriodicOptions) {
  const { everyMs, jitter = 0, run, onError } = options
  const stopping = new AbortController()
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined

  function schedule (): void {
    if (stopping.signal.aborted) return
    timer = setTimeout(tick, everyMs * (1 - jitter + Math.random() * 2 * jitter))
    timer.unref()
  }

  function tick (): void {
    running ??= (async () => { await run(stopping.signal) })()
      .catch(onError)
      .finally(() => { running = undefined })
    schedule()
  }

  return {
    /** Starts ticking; the first run comes one interval from now. Does nothing once started or stopped. */
    start (): void {
      if (timer === undefined) schedule()
    },

    /** No run starts from now on; resolves once the run in flight, if any, has ended. */
    async stop (): Promise<void> {
      stopping.abort()
      clearTimeout(timer)
      await running
    }
  }
}

export type Periodic = ReturnType<typeof createPeriodic>
