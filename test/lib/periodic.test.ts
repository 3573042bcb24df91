import t from 'tap'
import { fileURLToPath } from 'node:url'
import { createPeriodic } from '../../lib/periodic.js'
import { runScript } from '../helpers/command.js'

const root = fileURLToPath(new URL('../..', import.meta.url))

/** A promise and the function that resolves it. */
function deferred (): { promise: Promise<void>, resolve: () => void } {
  let settle!: () => void
  const promise = new Promise<void>((resolve) => { settle = resolve })
  return { promise, resolve: settle }
}

/** Resolves once a 1 ms interval has fired `count` times: long enough for a 1 ms periodic to tick meanwhile. */
async function intervalsPass (count: number): Promise<void> {
  await new Promise<void>((resolve) => {
    let fired = 0
    const interval = setInterval(() => {
      if (++fired < count) return
      clearInterval(interval)
      resolve()
    }, 1)
  })
}

/** Resolves after the callbacks queued so far, and those they queue, up to `turns` turns of the event loop. */
async function turns (count: number): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve))
}

/**
 * Holds the process alive until the test ends: the periodic's own timers do not (the last
 * test shows it), and a test waiting on its runs has nothing else pending.
 */
function keepProcessAlive (t: { teardown: (fn: () => void) => void }): void {
  const interval = setInterval(() => {}, 60_000)
  t.teardown(() => { clearInterval(interval) })
}

t.test('a run slower than the interval: the ticks meanwhile start none, the next run starts after it ended', async (t) => {
  keepProcessAlive(t)
  const log: string[] = []
  const third = deferred()
  let runs = 0
  let active = 0
  let most = 0
  const periodic = createPeriodic({
    everyMs: 1,
    onError: (error) => { t.fail(String(error)) },
    run: async () => {
      const run = ++runs
      most = Math.max(most, ++active)
      log.push(`start ${run}`)
      await intervalsPass(5)
      log.push(`end ${run}`)
      active--
      if (run === 3) third.resolve()
    }
  })
  periodic.start()
  await third.promise
  await periodic.stop()
  t.equal(most, 1, 'never two runs at once')
  t.same(log, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3'], 'each run starts after the one before ended')
})

t.test('stop asks the run in flight to end, waits for it, and no run starts after', async (t) => {
  keepProcessAlive(t)
  const log: string[] = []
  const started = deferred()
  const release = deferred()
  const signals: AbortSignal[] = []
  const periodic = createPeriodic({
    everyMs: 1,
    onError: (error) => { t.fail(String(error)) },
    run: async (signal) => {
      signals.push(signal)
      started.resolve()
      await release.promise
      log.push('run ended')
    }
  })
  periodic.start()
  await started.promise
  t.equal(signals[0]?.aborted, false, 'a run is not asked to end while the periodic goes on')

  const stopped = periodic.stop().then(() => { log.push('stopped') })
  t.equal(signals[0]?.aborted, true, 'stop asks the run in flight to end')
  await turns(5)
  t.same(log, [], 'stop has not resolved while the run goes on')
  release.resolve()
  await stopped
  t.same(log, ['run ended', 'stopped'], 'stop resolved once the run had ended')

  await intervalsPass(5)
  t.equal(signals.length, 1, 'no run started after stop')
  periodic.start()
  await intervalsPass(5)
  t.equal(signals.length, 1, 'nor after a start once stopped')
})

t.test('a run that fails is reported, and the next one runs', async (t) => {
  keepProcessAlive(t)
  const log: string[] = []
  const third = deferred()
  let runs = 0
  const periodic = createPeriodic({
    everyMs: 1,
    onError: (error) => { log.push(`reported: ${(error as Error).message}`) },
    run: () => {
      const run = ++runs
      log.push(`run ${run}`)
      if (run === 1) return Promise.reject(new Error('it rejected'))
      if (run === 2) throw new Error('it threw')
      third.resolve()
    }
  })
  periodic.start()
  await third.promise
  await periodic.stop()
  t.same(log, ['run 1', 'reported: it rejected', 'run 2', 'reported: it threw', 'run 3'], 'each failure reported before the next run, which happened')
})

t.test('no timer of a periodic keeps the process alive', async (t) => {
  // A child process starts two periodics, a slow one and one that has already run once
  // (its timer armed again), then has nothing else to do: it must exit by itself.
  const script = `
    import { createPeriodic } from './lib/periodic.ts'
    const onError = (error) => { console.error(error); process.exitCode = 1 }
    const keepAlive = setTimeout(() => {}, 600_000)
    createPeriodic({ everyMs: 1, onError, run: () => { clearTimeout(keepAlive) } }).start()
    createPeriodic({ everyMs: 3_600_000, onError, run: () => {} }).start()
  `
  const { code, signal, stderr } = await runScript(script, root)
  t.equal(signal, null, 'the process was not killed after waiting for it to end')
  t.equal(code, 0, `it exited by itself ${stderr}`)
})
