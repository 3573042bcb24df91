/**
 * Three instances of the service on one MariaDB database, as behind a load balancer, all
 * sent the same Idempotency-Key at once: one dump, one row, one quota slot, one download.
 * The unique index decides which admission owns the key; the replays on the instance that
 * runs the dump wait for it in memory, those on the other two poll its row.
 */
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyServerOptions } from 'fastify'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { createTestDatabase } from '../helpers/db.js'
import { countRows, postDump } from '../helpers/dumps.js'
import { captureLogs } from '../helpers/logs.js'
import { startOrigin } from '../helpers/origin.js'

if (process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === '') {
  t.comment('multi-instance idempotency tests skipped: MYSQL_URL is not set')
} else {
  const origin = await startOrigin()
  t.teardown(() => origin.close())

  /** A new MariaDB database and storage folder, and a function that starts an instance on them. */
  async function sharedDatabase (t: Test) {
    const database = await createTestDatabase('mysql')
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-idempotency-'))
    t.teardown(async () => {
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    return async (server: FastifyServerOptions = {}) => (await buildTestApp(t, 'mysql', { STORAGE_DIR: storageDir }, database, server)).app
  }

  t.test('nine posts with one key over three instances make one dump', async (t) => {
    const logs = captureLogs()
    const instance = await sharedDatabase(t)
    const instances = [await instance({ logger: logs.logger }), await instance({ logger: logs.logger }), await instance({ logger: logs.logger })]
    const token = await login(instances[0]!, sampleUsers.gold.username, sampleUsers.gold.password)
    const key = randomUUID()
    const hold = `instances-${key}`
    const items = [{ name: 'Everywhere', images: [origin.url(`/held/${hold}/png/1`), origin.url(`/png/2?${hold}`)] }]
    const [rows, seen] = [await countRows(instances[0]!), origin.requests]

    const answers = Promise.all(Array.from({ length: 9 }, (_, i) => postDump(instances[i % 3]!, token, 'json', items, { 'idempotency-key': key })))
    // eight replays wait, wherever they arrived; a second dump would ask the origin again
    await Promise.race([logs.waitFor(/"msg":"replay: waiting for the dump to complete"/, 8), origin.waitForRequests(seen + 3)])
    t.equal(logs.count(/replay: waiting for the dump to complete/), 8, 'eight replays wait for the one dump')
    origin.release(hold)
    const responses = await answers

    t.same(responses.map((r) => r.statusCode), Array(9).fill(200), 'every post is answered 200')
    const ids = new Set(responses.map((r) => r.json().requestId))
    t.equal(ids.size, 1, 'with one requestId')
    t.equal(responses.filter((r) => r.headers['idempotent-replayed'] === 'true').length, 8, 'eight of them replays')
    t.ok(responses.every((r) => r.json().status === 'SUCCESS'), 'each the complete dump, on every instance')
    t.equal(await countRows(instances[0]!), rows + 1, 'one row')
    t.equal(origin.paths.filter((path) => path.startsWith(`/held/${hold}/`)).length, 1, 'one download of each image')
    t.equal(origin.paths.filter((path) => path === `/png/2?${hold}`).length, 1)
    for (const [i, app] of instances.entries()) {
      const quota = await app.inject({ method: 'GET', url: '/v1/quota', headers: { authorization: `Bearer ${token}` } })
      t.equal(quota.json().used, 1, `instance ${i + 1}: one quota slot`)
    }
  })

  t.test('a replay waiting on an instance that stops is told to send it again, and then gets the dump', async (t) => {
    const logs = captureLogs()
    const instance = await sharedDatabase(t)
    const running = await instance()
    const stopping = await instance({ logger: logs.logger })
    const token = await login(running, sampleUsers.gold.username, sampleUsers.gold.password)
    const key = randomUUID()
    const hold = `stopping-${key}`
    const items = [{ name: 'Interrupted wait', images: [origin.url(`/held/${hold}/png/3`)] }]
    const seen = origin.requests
    const original = postDump(running, token, 'json', items, { 'idempotency-key': key })
    await origin.waitForRequests(seen + 1)
    const replay = postDump(stopping, token, 'json', items, { 'idempotency-key': key })
    await logs.waitFor(/replay: waiting for the dump to complete/)
    await stopping.close()
    const refused = await replay
    t.equal(refused.statusCode, 503)
    t.equal(refused.json().message, 'the service is stopping before this dump completed; send the same request again (same Idempotency-Key) for its result')
    t.equal(refused.headers['idempotent-replayed'], 'true', 'it was a replay')

    origin.release(hold)
    const done = await original
    const again = await postDump(running, token, 'json', items, { 'idempotency-key': key })
    t.equal(again.headers['idempotent-replayed'], 'true')
    t.equal(again.body, done.body, 'sent again, it gets the dump')
  })
}
