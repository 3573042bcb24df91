import t from 'tap'
import { createOutcomeRecorder } from '../../../plugins/dumps/outcome-recorder.js'

/**
 * A store the recorder writes to: it keeps every batch, can be made to fail the next
 * writes, and tells when a write arrives (event-driven: tests wait on it, never sleep).
 */
function createStore () {
  const batches: number[][] = []
  let failNext = 0
  let waiters: Array<{ count: number, resolve: () => void }> = []
  const calls: number[] = []
  return {
    batches,
    /** every call of write, in order: the size of the batch it was given */
    calls,
    get written (): number[] { return batches.flat() },
    failNextWrites (n: number): void { failNext = n },
    write: async (batch: number[]): Promise<void> => {
      calls.push(batch.length)
      const ready = waiters.filter((w) => calls.length >= w.count)
      waiters = waiters.filter((w) => calls.length < w.count)
      for (const w of ready) w.resolve()
      if (failNext > 0) {
        failNext--
        throw new Error('the database is away')
      }
      batches.push([...batch])
    },
    /** resolves once write has been called `count` times */
    calledTimes (count: number): Promise<void> {
      if (calls.length >= count) return Promise.resolve()
      return new Promise((resolve) => { waiters.push({ count, resolve }) })
    }
  }
}

t.test('count bound: a write starts as soon as maxBatch outcomes wait, with exactly those', async (t) => {
  const store = createStore()
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 3, maxDelayMs: 60_000 })
  t.teardown(() => recorder.stop())
  recorder.add(1)
  recorder.add(2)
  t.same(store.calls, [], 'two of three: nothing written yet')
  recorder.add(3)
  await store.calledTimes(1)
  t.same(store.calls, [3], 'the third starts the write at once, without waiting for the delay')
  for (let i = 4; i <= 8; i++) recorder.add(i)
  await store.calledTimes(2)
  t.same(store.calls, [3, 3], 'the next three make the next batch; the rest waits')
  t.equal(recorder.waiting, 2)
  await recorder.flush()
  t.same(store.batches, [[1, 2, 3], [4, 5, 6], [7, 8]], 'in order, one write per batch')
})

t.test('time bound: what waits is written once the oldest has waited maxDelayMs', async (t) => {
  const store = createStore()
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 100, maxDelayMs: 80 })
  t.teardown(() => recorder.stop())
  const start = performance.now()
  recorder.add(1)
  recorder.add(2)
  await store.calledTimes(1)
  const waited = performance.now() - start
  t.ok(waited >= 75, `written after the delay, not before (${waited.toFixed(0)} ms)`)
  t.ok(waited < 5000, 'and without anyone calling flush')
  await recorder.flush()
  t.same(store.batches, [[1, 2]], 'both in one write')
  t.equal(recorder.recorded, 2)
})

t.test('flush on completion: writes what waits at once, and resolves when it is written', async (t) => {
  const store = createStore()
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 2, maxDelayMs: 60_000 })
  for (let i = 1; i <= 5; i++) recorder.add(i)
  await recorder.flush()
  t.same(store.written, [1, 2, 3, 4, 5], 'everything added is written by the time flush resolves')
  t.equal(recorder.waiting, 0)
  t.same(store.calls.every((size) => size <= 2), true, 'still in batches of at most maxBatch')
  await recorder.flush()
  t.equal(store.calls.length, 3, 'a flush with nothing waiting writes nothing')
})

t.test('a failing write is tried again, in order, and loses nothing', async (t) => {
  const store = createStore()
  const errors: unknown[] = []
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 2, maxDelayMs: 60_000, retryDelayMs: 10, onError: (error) => errors.push(error) })
  t.teardown(() => recorder.stop())
  store.failNextWrites(2)
  recorder.add(1)
  recorder.add(2) // a background write starts, and fails
  recorder.add(3)
  await store.calledTimes(3) // tried again after a back-off, by itself: fails, then succeeds
  await recorder.flush()
  t.equal(errors.length, 2, 'each failure was reported')
  t.same(store.written, [1, 2, 3], 'every outcome written once, in the order it came')
  t.equal(recorder.recorded, 3)
})

t.test('flush gives up after `attempts` failures in a row, keeping the outcomes for a later flush', async (t) => {
  const store = createStore()
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 10, maxDelayMs: 60_000, attempts: 3, retryDelayMs: 5 })
  recorder.add(1)
  recorder.add(2)
  store.failNextWrites(3)
  await t.rejects(recorder.flush(), /the database is away/, 'the last error')
  t.equal(store.calls.length, 3, 'after three attempts')
  t.equal(recorder.waiting, 2, 'nothing lost')
  await recorder.flush()
  t.same(store.written, [1, 2], 'the next flush writes them')
})

t.test('a write that throws at once counts as a failed one', async (t) => {
  let calls = 0
  const recorder = createOutcomeRecorder<number>({
    write: (batch) => {
      calls++
      if (calls === 1) throw new Error('synchronously')
      t.same(batch, [1])
      return Promise.resolve()
    },
    maxDelayMs: 60_000,
    retryDelayMs: 1
  })
  recorder.add(1)
  await recorder.flush()
  t.equal(calls, 2)
  t.equal(recorder.recorded, 1)
})

t.test('stopped: nothing more is written, and flush resolves at once', async (t) => {
  const store = createStore()
  const recorder = createOutcomeRecorder({ write: store.write, maxBatch: 2, maxDelayMs: 10 })
  recorder.add(1)
  recorder.stop()
  recorder.add(2)
  recorder.add(3)
  await recorder.flush()
  t.same(store.calls, [], 'neither the timer nor the count nor flush wrote anything')
})
