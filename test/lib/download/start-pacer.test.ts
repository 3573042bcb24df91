import t from 'tap'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { createStartPacer } from '../../../lib/download/start-pacer.js'
import { countTurns } from '../../helpers/turns.js'

/** Calls `turn()` for `count` starts at once; records, per start, the turn of the event loop it was let through in. */
async function startAll (perTurn: number, count: number): Promise<number[]> {
  const pacer = createStartPacer(perTurn)
  const clock = countTurns()
  const turns: number[] = []
  await Promise.all(Array.from({ length: count }, async (_, i) => {
    await pacer.turn()
    turns[i] = clock.turn
  }))
  clock.stop()
  return turns
}

t.test('the first `perTurn` starts go at once, the rest a few per later turn, in order', async (t) => {
  const turns = await startAll(3, 10)
  t.same(turns.slice(0, 3), [0, 0, 0], 'three in the turn they asked in')
  const perTurn = new Map<number, number>()
  for (const turn of turns) perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1)
  t.ok([...perTurn.values()].every((n) => n <= 3), `never more than 3 in one turn: ${JSON.stringify([...perTurn])}`)
  t.same(turns, [...turns].sort((a, b) => a - b), 'let through in the order they asked')
  t.ok(turns.at(-1)! >= 3, 'the tenth waited at least three turns')
})

t.test('a start that comes after a quiet turn goes at once', async (t) => {
  const pacer = createStartPacer(2)
  await Promise.all([pacer.turn(), pacer.turn(), pacer.turn()])
  await nextTurn()
  await nextTurn()
  let went = false
  const started = pacer.turn().then(() => { went = true })
  await Promise.resolve()
  t.ok(went, 'no turn was waited for')
  await started
  t.equal(pacer.waiting, 0)
})

t.test('a late start never overtakes one that is waiting', async (t) => {
  const pacer = createStartPacer(1)
  const order: string[] = []
  const first = pacer.turn().then(() => order.push('first'))
  const second = pacer.turn().then(() => order.push('second'))
  t.equal(pacer.waiting, 1)
  const third = pacer.turn().then(() => order.push('third'))
  await Promise.all([first, second, third])
  t.same(order, ['first', 'second', 'third'])
})

t.test('perTurn must be a positive integer', async (t) => {
  for (const perTurn of [0, -1, 1.5, Number.NaN]) t.throws(() => createStartPacer(perTurn), /positive integer/, String(perTurn))
})
