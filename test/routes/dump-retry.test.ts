/**
 * POST /v1/dumps/{id}/retry: a new dump, one quota slot, of the images that failed in a
 * complete dump, with `retryOf` naming it.
 */
import t from 'tap'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { countRows, postDump } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: retrying a dump's failures`, async (t) => {
    // a short deadline, so that a stalled image fails (TIMEOUT) and its retry then succeeds
    const { app } = await buildTestApp(t, engine, { DOWNLOAD_TIMEOUT_MS: '1500' })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    const retry = async (id: number, headers: Record<string, string> = {}) =>
      await app.inject({ method: 'POST', url: `/v1/dumps/${id}/retry`, headers: { ...auth, ...headers } })

    t.test('a new dump of exactly the failed images, under their items, with retryOf', async (t) => {
      const stalled = origin.url(`/stall-once/retry-${engine}`)
      const first = await postDump(app, token, 'json', [
        { name: 'Fine', images: [origin.url('/png/1')] },
        { name: 'Mixed', images: [origin.url('/png/2'), stalled, origin.url('/status/404')] }
      ])
      t.equal(first.statusCode, 200)
      const original = first.json()
      t.equal(original.status, 'PARTIAL')
      const remaining = Number(first.headers['ratelimit-remaining'])

      const seenBefore = origin.paths.length
      const rows = await countRows(app)
      const answer = await retry(original.requestId)
      t.equal(answer.statusCode, 200)
      const retried = answer.json()
      t.not(retried.requestId, original.requestId, 'a new dump')
      t.equal(retried.retryOf, original.requestId)
      t.equal(Number(answer.headers['ratelimit-remaining']), remaining - 1, 'one quota slot')
      t.equal(await countRows(app), rows + 1, 'one new row')
      t.same(retried.items.map((item: { name: string, images: Array<{ url: string }> }) => [item.name, item.images.map((image) => image.url)]),
        [['Mixed', [stalled, origin.url('/status/404')]]], 'only the item with failures, only its failed URLs')
      t.same(origin.paths.slice(seenBefore).sort(), [`/stall-once/retry-${engine}`, '/status/404'].sort(), 'only the failed images were fetched')
      t.match(retried.items[0].images, [{ status: 'SUCCESS', location: `/v1/dumps/${retried.requestId}/images/1` }, { status: 'FAILURE', error: { httpStatus: 404 } }])
      t.equal(retried.status, 'PARTIAL')

      const stored = await app.inject({ method: 'GET', url: `/v1/dumps/${retried.requestId}`, headers: auth })
      t.equal(stored.json().retryOf, original.requestId, 'the stored record names the dump it retries')
      const image = await app.inject({ method: 'GET', url: `/v1/dumps/${retried.requestId}/images/1`, headers: auth })
      t.equal(image.statusCode, 200)
      t.equal(image.headers['content-type'], 'image/png')
    })

    t.test('asynchronous, in XML, and safe to send again with an Idempotency-Key', async (t) => {
      const first = await postDump(app, token, 'xml', [{ name: 'X', images: [origin.url('/status/500'), origin.url('/png/3')] }], { accept: 'application/json' })
      const { requestId } = first.json()
      const accepted = await retry(requestId, { prefer: 'respond-async', 'idempotency-key': `retry-xml-${engine}` })
      t.equal(accepted.statusCode, 202)
      const { requestId: retryId } = accepted.json()
      t.equal(accepted.headers.location, `/v1/dumps/${retryId}`)
      t.equal(accepted.json().retryOf, requestId)
      const again = await retry(requestId, { 'idempotency-key': `retry-xml-${engine}` })
      t.equal(again.headers['idempotent-replayed'], 'true')
      t.equal(again.json().requestId, retryId, 'the same retry, not a second one')
      const xml = await app.inject({ method: 'GET', url: `/v1/dumps/${retryId}`, headers: auth })
      t.match(xml.headers['content-type'], /xml/, 'the retry keeps the format of the dump it retries')
      t.match(xml.body, new RegExp(`<requestId>${retryId}</requestId><retryOf>${requestId}</retryOf>`))
    })

    t.test('refused: a dump still running, one without failures, an unknown or another user\'s dump', async (t) => {
      const hold = `retry-running-${engine}`
      const running = (await postDump(app, token, 'json', [{ name: 'R', images: [origin.url(`/held/${hold}/png/4`)] }], { prefer: 'respond-async' })).json()
      const busy = await retry(running.requestId)
      t.equal(busy.statusCode, 409)
      t.match(busy.json().message, /still running/)
      origin.release(hold)

      const clean = (await postDump(app, token, 'json', [{ name: 'C', images: [origin.url('/png/5')] }])).json()
      const nothing = await retry(clean.requestId)
      t.equal(nothing.statusCode, 409)
      t.match(nothing.json().message, /no failed image/)

      t.equal((await retry(999999)).statusCode, 404)
      const other = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
      t.equal((await app.inject({ method: 'POST', url: `/v1/dumps/${clean.requestId}/retry`, headers: { authorization: `Bearer ${other}` } })).statusCode, 404)
      t.equal((await app.inject({ method: 'POST', url: `/v1/dumps/${clean.requestId}/retry` })).statusCode, 401)
      const rows = await countRows(app)
      t.equal((await retry(clean.requestId)).statusCode, 409)
      t.equal(await countRows(app), rows, 'a refused retry writes nothing')
    })
  })
}
