/**
 * Prefer: respond-async on POST /v1/dumps (RFC 7240): 202 Accepted at admission, with
 * `Location` and `Preference-Applied`, the record so far as the body, and the dump running
 * on in the background until it is recorded; GET /v1/dumps/{id} follows it.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { connect } from '../../db/connect.js'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { countRows, filesUnder, postDump, type TestItem } from '../helpers/dumps.js'
import { captureLogs } from '../helpers/logs.js'
import { startOrigin } from '../helpers/origin.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

const ASYNC = { prefer: 'respond-async' }

/**
 * What a client does after a 202: GET the Location until X-Dump-Complete says true. A
 * bounded loop with a pause between reads, as the README tells clients to poll.
 */
async function pollUntilComplete (app: FastifyInstance, token: string, location: string, headers: Record<string, string> = {}) {
  for (let attempt = 0; attempt < 400; attempt++) {
    const response = await app.inject({ method: 'GET', url: location, headers: { authorization: `Bearer ${token}`, ...headers } })
    if (response.statusCode !== 200) throw new Error(`GET ${location}: ${response.statusCode} ${response.body}`)
    if (response.headers['x-dump-complete'] === 'true') return response
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`${location} did not complete within 400 polls`)
}

const pending = (items: readonly TestItem[]) => items.map((item, i) => ({
  itemId: i + 1,
  name: item.name,
  processStatus: 'PENDING',
  images: item.images.map((url) => ({ url, status: 'PENDING' }))
}))

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: Prefer: respond-async`, async (t) => {
    const logs = captureLogs()
    const { app, storageDir } = await buildTestApp(t, engine, {}, undefined, { logger: logs.logger })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }

    t.test('202 at admission with Location and Preference-Applied, then GET until complete', async (t) => {
      const hold = `async-${engine}`
      const items = [{ name: 'Async', images: [origin.url(`/held/${hold}/png/7`), origin.url('/status/404')] }]
      const rows = await countRows(app)
      // the held image has no answer yet: a synchronous answer could not come before release
      const accepted = await postDump(app, token, 'json', items, ASYNC)
      t.equal(accepted.statusCode, 202)
      const { requestId } = accepted.json()
      t.equal(accepted.headers.location, `/v1/dumps/${requestId}`)
      t.equal(accepted.headers['preference-applied'], 'respond-async')
      t.equal(accepted.headers['ratelimit-limit'], '100', 'quota headers as on any admitted dump')
      t.equal(accepted.headers['idempotent-replayed'], undefined)
      t.match(accepted.headers['content-type'], /^application\/json/)
      t.match(accepted.json(), { requestId, status: 'PENDING', items: pending(items) }, 'the record so far: every image PENDING')
      t.equal(await countRows(app), rows + 1, 'admitted: one row')

      const soFar = await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}`, headers: auth })
      t.equal(soFar.headers['x-dump-complete'], 'false', 'GET shows it running')

      origin.release(hold)
      const done = await pollUntilComplete(app, token, `/v1/dumps/${requestId}`)
      const record = done.json()
      t.equal(record.requestId, requestId)
      t.equal(record.status, 'PARTIAL')
      t.match(record.items[0].images, [{ status: 'SUCCESS', location: `/v1/dumps/${requestId}/images/1` }, { status: 'FAILURE', error: { httpStatus: 404 } }])
      t.ok((await filesUnder(storageDir)).some((f) => f.endsWith(`/${requestId}/1.png`)), 'the image is stored')
    })

    t.test('without the preference the answer stays synchronous', async (t) => {
      for (const prefer of [undefined, 'handling=lenient', 'return=minimal', 'respond-asynchronously']) {
        const response = await postDump(app, token, 'json', [{ name: 'Sync', images: [origin.url('/png/8')] }], prefer === undefined ? {} : { prefer })
        t.equal(response.statusCode, 200, `Prefer: ${prefer ?? '(none)'}`)
        t.equal(response.json().status, 'SUCCESS')
        t.equal(response.headers['preference-applied'], undefined)
      }
    })

    t.test('an XML client gets its 202 in XML', async (t) => {
      const response = await postDump(app, token, 'xml', [{ name: 'Xml', images: [origin.url('/png/9')] }], ASYNC)
      t.equal(response.statusCode, 202)
      t.match(response.headers['content-type'], /^application\/xml/)
      const requestId = /<requestId>(\d+)<\/requestId>/.exec(response.body)?.[1]
      t.ok(requestId, 'the request id is in the body')
      t.equal(response.headers.location, `/v1/dumps/${requestId}`)
      t.match(response.body, /<status>PENDING<\/status><items><item><itemId>1<\/itemId><name>Xml<\/name><processStatus>PENDING<\/processStatus>/)
      const done = await pollUntilComplete(app, token, response.headers.location!)
      t.match(done.body, /<status>SUCCESS<\/status>/, 'and the record stays XML')
    })

    t.test('an async replay while the dump runs gets 202 with the record so far, marked replayed', async (t) => {
      const key = randomUUID()
      const hold = `async-replay-${engine}`
      const items = [{ name: 'Replayed', images: [origin.url(`/held/${hold}/png/10`)] }]
      const headers = { ...ASYNC, 'idempotency-key': key }
      const requests = origin.requests
      const first = await postDump(app, token, 'json', items, headers)
      t.equal(first.statusCode, 202)
      const rows = await countRows(app)

      const replay = await postDump(app, token, 'json', items, headers)
      t.equal(replay.statusCode, 202)
      t.equal(replay.headers['idempotent-replayed'], 'true')
      t.equal(replay.headers.location, first.headers.location)
      t.equal(replay.headers['preference-applied'], 'respond-async')
      t.match(replay.json(), { requestId: first.json().requestId, status: 'PENDING', items: pending(items) })
      t.equal(await countRows(app), rows, 'no second row')

      // a synchronous replay of the same key waits for the background dump
      const waiting = logs.count(/replay: waiting for the dump to complete/)
      const syncReplay = postDump(app, token, 'json', items, { 'idempotency-key': key })
      await logs.waitFor(/replay: waiting for the dump to complete/, waiting + 1)
      origin.release(hold)
      const synced = await syncReplay
      t.equal(synced.statusCode, 200)
      t.equal(synced.headers['idempotent-replayed'], 'true')
      t.match(synced.json(), { requestId: first.json().requestId, status: 'SUCCESS' })

      const after = await postDump(app, token, 'json', items, headers)
      t.equal(after.statusCode, 200, 'once complete, an async replay is answered with the dump itself')
      t.equal(after.headers['idempotent-replayed'], 'true')
      t.equal(after.headers['preference-applied'], undefined, 'nothing was deferred')
      t.same(after.json(), synced.json())
      t.equal(origin.requests, requests + 1, 'the image was downloaded once')
    })

    t.test('a background dump that cannot be recorded is logged, never an unhandled rejection', async (t) => {
      const unhandled: unknown[] = []
      const onUnhandled = (reason: unknown): void => { unhandled.push(reason) }
      process.on('unhandledRejection', onUnhandled)
      t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
      const hold = `async-lost-${engine}`
      const accepted = await postDump(app, token, 'json', [{ name: 'Lost', images: [origin.url(`/held/${hold}/png/11`)] }], ASYNC)
      const { requestId } = accepted.json()
      // another instance completed the row meanwhile: this run's outcome cannot be recorded,
      // and what happens to the dump's files is the business of the run that has it now
      await app.persistence.db.updateTable('requests').set({ status: 1 }).where('id', '=', requestId).execute()
      const failed = logs.count(/a dump running in the background failed/)
      origin.release(hold)
      await logs.waitFor(/a dump running in the background failed/, failed + 1)
      await app.dumps.backgroundSettled()
      const line = JSON.parse(logs.lines.filter((l) => /a dump running in the background failed/.test(l)).at(-1)!)
      t.equal(line.level, 50, 'logged as an error')
      t.equal(line.requestId, requestId, 'naming the dump')
      t.match(line.err.message, new RegExp(`^dump ${requestId}: stopped \\(taken\\) before it was complete$`))
      t.same(unhandled, [], 'no unhandled rejection')
    })
  })

  t.test(`${engine}: closing waits for a dump running in the background`, async (t) => {
    const logs = captureLogs()
    const { app, database, storageDir } = await buildTestApp(t, engine, {}, undefined, { logger: logs.logger })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const hold = `async-close-${engine}`
    const accepted = await postDump(app, token, 'json', [{ name: 'Closing', images: [origin.url(`/held/${hold}/png/12`)] }], ASYNC)
    const { requestId } = accepted.json()
    const closing = app.close()
    await logs.waitFor(/closing: waiting for the dumps running in the background/)
    origin.release(hold)
    await closing

    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    const row = await db.selectFrom('requests').select(['status', 'data']).where('id', '=', requestId).executeTakeFirstOrThrow()
    t.equal(Number(row.status), 1, 'the dump was recorded before the database closed')
    t.match(JSON.parse(Buffer.from(row.data!).toString('utf8')), { status: 'SUCCESS' }, 'its download was not cut by the closing fetcher')
    t.ok((await filesUnder(storageDir)).some((f) => f.endsWith(`/${requestId}/1.png`)), 'and its image is stored')
  })
}
