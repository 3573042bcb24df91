import t from 'tap'
import { createByteBudget, type Lease } from '../../../lib/download/byte-budget.js'

/** Lets every settled promise run its reactions. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Starts an acquire that records `name` in `log` once granted (or `name!reason` once refused). */
function acquirer (budget: ReturnType<typeof createByteBudget>, log: string[]) {
  return (name: string, bytes: number, signal?: AbortSignal): Promise<Lease | undefined> => budget.acquire(bytes, signal).then(
    (lease) => { log.push(name); return lease },
    (reason: unknown) => { log.push(`${name}!${String(reason)}`); return undefined })
}

t.test('downloads start at once while both the count and the bytes allow', async (t) => {
  const budget = createByteBudget(100, 3)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  await Promise.all([acquire('a', 30), acquire('b', 30), acquire('c', 30)])
  t.same(log, ['a', 'b', 'c'])
  t.equal(budget.usedBytes, 90)
  t.equal(budget.holders, 3)
})

t.test('the count limits even when bytes are left', async (t) => {
  const budget = createByteBudget(1000, 2)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const [a] = await Promise.all([acquire('a', 1), acquire('b', 1)])
  const c = acquire('c', 1)
  await settle()
  t.same(log, ['a', 'b'], 'a third waits for a place')
  a!.release()
  await c
  t.same(log, ['a', 'b', 'c'])
})

t.test('the bytes limit, strictly in order: a small download does not overtake a large one', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 60)
  const big = acquire('big', 60)
  const small = acquire('small', 10)
  await settle()
  t.same(log, ['a'], 'the small one would fit, but waits behind the large one')
  a!.release()
  await Promise.all([big, small])
  t.same(log, ['a', 'big', 'small'])
})

t.test('a request larger than the whole budget is cut to it and proceeds alone', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const huge = await acquire('huge', 1_000_000)
  t.equal(huge!.bytes, 100)
  const next = acquire('next', 1)
  await settle()
  t.same(log, ['huge'], 'nothing else meanwhile')
  huge!.release()
  await next
  t.same(log, ['huge', 'next'])
})

t.test('shrinking gives bytes back to the queue at once', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 64)
  const b = acquire('b', 64)
  await settle()
  t.same(log, ['a'])
  await a!.resize(2)
  await b
  t.same(log, ['a', 'b'])
  t.equal(budget.usedBytes, 66)
})

t.test('a download growing goes before new ones, and waits for the bytes', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 50)
  const b = await acquire('b', 40)
  const grown = a!.resize(90).then(() => { log.push('a grew') })
  const c = acquire('c', 5)
  await settle()
  t.same(log, ['a', 'b'], 'a waits for b; c waits behind a although 5 bytes would fit')
  b!.release()
  await Promise.all([grown, c])
  t.same(log, ['a', 'b', 'a grew', 'c'])
  t.equal(budget.usedBytes, 95)
})

t.test('when every download in flight waits to grow, the oldest grows anyway: no deadlock', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 40)
  const b = await acquire('b', 40)
  const aGrew = a!.resize(100).then(() => { log.push('a grew') })
  await settle()
  t.same(log, ['a', 'b'], 'a waits while b is still running: b will free its bytes')
  const bGrew = b!.resize(100).then(() => { log.push('b grew') })
  await aGrew
  t.same(log, ['a', 'b', 'a grew'], 'once b waits too, nobody could free anything: a goes on')
  t.equal(budget.usedBytes, 140, 'over the budget by a\'s growth, for as long as a runs')
  a!.release()
  await bGrew
  t.same(log, ['a', 'b', 'a grew', 'b grew'])
  t.equal(budget.usedBytes, 100)
})

t.test('a waiter whose signal aborts leaves the queue alone, and the queue moves on', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 50)
  const controller = new AbortController()
  const blocked = acquire('blocked', 80, controller.signal)
  const behind = acquire('behind', 40)
  await settle()
  t.same(log, ['a'], 'behind waits behind the large one')
  controller.abort('stopped')
  await Promise.all([blocked, behind])
  t.same(log, ['a', 'blocked!stopped', 'behind'])

  const growing = new AbortController()
  const grow = a!.resize(100, growing.signal).catch((reason: unknown) => { log.push(`grow!${String(reason)}`) })
  growing.abort('deadline')
  await grow
  t.equal(a!.bytes, 50, 'a refused growth leaves the reservation as it was')
  t.same(log.at(-1), 'grow!deadline')
})

t.test('rejectAll refuses every waiter, new and growing; leases given stay until released', async (t) => {
  const budget = createByteBudget(100, 10)
  const log: string[] = []
  const acquire = acquirer(budget, log)
  const a = await acquire('a', 60)
  const b = await acquire('b', 30)
  const grow = a!.resize(90).catch((reason: unknown) => { log.push(`grow!${String(reason)}`) })
  const c = acquire('c', 50)
  await settle()
  budget.rejectAll('closing')
  await Promise.all([grow, c])
  t.same(log.slice(0, 2), ['a', 'b'])
  t.same(log.slice(2).sort(), ['c!closing', 'grow!closing'], 'both waiters refused')
  t.equal(budget.holders, 2)
  a!.release()
  b!.release()
  b!.release()
  t.equal(budget.holders, 0, 'a second release does nothing')
  t.equal(budget.usedBytes, 0)
})
