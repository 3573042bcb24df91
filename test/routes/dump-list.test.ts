/**
 * GET /v1/dumps: the caller's own dumps, newest first, with a cursor that pages through
 * them without duplicates or gaps while new dumps arrive.
 */
import t from 'tap'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { postDump } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { encodeCursor } from '../../routes/dump-list.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the list of my dumps`, async (t) => {
    const { app } = await buildTestApp(t, engine)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    const list = async (query = '', headers: Record<string, string> = {}) =>
      await app.inject({ method: 'GET', url: `/v1/dumps${query}`, headers: { ...auth, ...headers } })

    const made: number[] = []
    for (let i = 0; i < 7; i++) {
      const images = i % 2 === 0 ? [origin.url(`/png/${i}`)] : [origin.url(`/png/${i}`), origin.url('/status/404')]
      made.push((await postDump(app, token, i === 3 ? 'xml' : 'json', [{ name: `D${i}`, images }], { accept: 'application/json' })).json().requestId)
    }
    const other = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
    await postDump(app, other, 'json', [{ name: 'Not mine', images: [origin.url('/png/99')] }])

    t.test('newest first, each with its status, counts and time; only my own', async (t) => {
      const response = await list()
      t.equal(response.statusCode, 200)
      const { dumps, nextCursor } = response.json()
      t.same(dumps.map((dump: { requestId: number }) => dump.requestId), [...made].reverse())
      t.equal(nextCursor, null, 'one page holds them all')
      t.same(dumps[0], { requestId: made[6], status: 'SUCCESS', createdAt: dumps[0].createdAt, progress: { total: 1, done: 1, succeeded: 1, failed: 0 } })
      t.same(dumps[1].progress, { total: 2, done: 2, succeeded: 1, failed: 1 })
      t.equal(dumps[1].status, 'PARTIAL')
      t.ok(Math.abs(Date.parse(dumps[0].createdAt) - Date.now()) < 60_000, 'createdAt is the admission time, in UTC')
      t.match(dumps[0].createdAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    })

    t.test('pages follow the cursor without duplicates or gaps while new dumps arrive', async (t) => {
      const seen: number[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const response = await list(`?limit=2${cursor === null ? '' : `&cursor=${cursor}`}`)
        t.equal(response.statusCode, 200)
        const page = response.json()
        seen.push(...page.dumps.map((dump: { requestId: number }) => dump.requestId))
        cursor = page.nextCursor
        // a dump admitted between pages
        if (pages++ === 0) await postDump(app, token, 'json', [{ name: 'Meanwhile', images: [origin.url('/png/50')] }])
      } while (cursor !== null)
      t.same(seen, [...made].reverse(), 'every dump once, in order; the new one belongs to a first page')
      t.equal(pages, 4)
      const first = (await list('?limit=1')).json()
      t.equal(first.dumps[0].requestId, made[6]! + 2, 'the dump admitted meanwhile (after the other user\'s) is on the first page now')
    })

    t.test('a running dump shows PENDING with the outcomes recorded so far', async (t) => {
      const hold = `list-${engine}`
      const { requestId } = (await postDump(app, token, 'json', [{ name: 'Running', images: [origin.url(`/held/${hold}/png/60`), origin.url('/status/410')] }], { prefer: 'respond-async' })).json()
      t.teardown(() => origin.release(hold))
      let dump
      for (let polls = 0; polls < 400; polls++) {
        dump = (await list('?limit=1')).json().dumps[0]
        if (dump.progress.done === 1) break
        await new Promise((resolve) => setTimeout(resolve, 25))
      }
      t.same(dump, { requestId, status: 'PENDING', createdAt: dump.createdAt, progress: { total: 2, done: 1, succeeded: 0, failed: 1 } })
    })

    t.test('in XML for a client that asks for it', async (t) => {
      const response = await list('?limit=1', { accept: 'application/xml' })
      t.match(response.headers['content-type'], /xml/)
      t.match(response.body, /^<\?xml version="1.0" encoding="UTF-8"\?><page><dumps><dump><requestId>\d+<\/requestId>.*<\/dump><\/dumps><nextCursor>.+<\/nextCursor><\/page>$/)
    })

    t.test('refused: no token, a cursor it did not give, a limit out of range', async (t) => {
      t.equal((await app.inject({ method: 'GET', url: '/v1/dumps' })).statusCode, 401)
      const bad = ['garbage', 'YmVmb3JlOjA', encodeCursor(1).slice(0, -1) + '!', Buffer.from('before:-3').toString('base64url'), Buffer.from('before:99999999999').toString('base64url'), 'x'.repeat(65)]
      for (const cursor of bad) {
        const response = await list(`?cursor=${encodeURIComponent(cursor)}`)
        t.equal(response.statusCode, 400, `cursor ${cursor}`)
        t.match(response.json().message, /cursor/)
      }
      for (const limit of ['0', '101', 'abc', '-1', '1.5']) {
        t.equal((await list(`?limit=${limit}`)).statusCode, 400, `limit ${limit}`)
      }
      t.equal((await list(`?cursor=${encodeCursor(1)}`)).json().dumps.length, 0, 'a cursor below every dump: an empty last page')
    })
  })
}
