import t from 'tap'
import { createSemaphore } from '../../lib/semaphore.js'

/** Acquires and records, in `log`, the name once the slot is granted (or `name!` once refused). */
function acquirer (semaphore: ReturnType<typeof createSemaphore>, log: string[]) {
  return (name: string): Promise<void> => semaphore.acquire().then(
    () => { log.push(name) },
    (reason: unknown) => { log.push(`${name}!${String(reason)}`) })
}

t.test('up to `limit` slots are granted at once', async (t) => {
  const log: string[] = []
  const acquire = acquirer(createSemaphore(2), log)
  await Promise.all([acquire('a'), acquire('b')])
  t.same(log, ['a', 'b'])
})

t.test('past the limit, waiters get a slot one release each, in the order they asked', async (t) => {
  const semaphore = createSemaphore(1)
  const log: string[] = []
  const acquire = acquirer(semaphore, log)
  await acquire('a')
  const waiting = ['b', 'c', 'd'].map(acquire)
  await Promise.resolve()
  t.same(log, ['a'], 'nobody else while the slot is held')
  semaphore.release()
  await waiting[0]
  t.same(log, ['a', 'b'], 'one release, one waiter: the first')
  semaphore.release()
  await waiting[1]
  semaphore.release()
  await waiting[2]
  t.same(log, ['a', 'b', 'c', 'd'], 'first come, first served')
})

t.test('a slot handed to a waiter stays taken: a newcomer waits behind', async (t) => {
  const semaphore = createSemaphore(1)
  const log: string[] = []
  const acquire = acquirer(semaphore, log)
  await acquire('a')
  const b = acquire('b')
  semaphore.release()
  await b
  const c = acquire('c')
  await b
  t.same(log, ['a', 'b'], 'c does not slip in while b holds the slot')
  semaphore.release()
  await c
  t.same(log, ['a', 'b', 'c'])
})

t.test('rejectAll refuses every waiter with the reason, and leaves held slots alone', async (t) => {
  const semaphore = createSemaphore(2)
  const log: string[] = []
  const acquire = acquirer(semaphore, log)
  await Promise.all([acquire('a'), acquire('b')])
  const refused = [acquire('c'), acquire('d')]
  semaphore.rejectAll('closed')
  await Promise.all(refused)
  t.same(log, ['a', 'b', 'c!closed', 'd!closed'], 'each waiter is rejected, in order')

  // a and b still hold their slots: a newcomer waits until one of them is released
  const e = acquire('e')
  semaphore.rejectAll('again')
  await e
  t.same(log.slice(4), ['e!again'], 'the queue works as before after rejectAll')
  semaphore.release()
  await acquire('f')
  t.same(log.slice(5), ['f'], 'a released slot is free again: nothing was lost or leaked by rejectAll')
  const g = acquire('g')
  semaphore.rejectAll('end')
  await g
  t.same(log.slice(6), ['g!end'], 'and the limit still holds: two slots, two holders (b, f)')
})

t.test('rejectAll on an empty queue does nothing', async (t) => {
  const semaphore = createSemaphore(1)
  semaphore.rejectAll('nothing to reject')
  const log: string[] = []
  await acquirer(semaphore, log)('a')
  t.same(log, ['a'])
})
