import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import persistence from '../../plugins/persistence.js'
import imageFetcher from '../../plugins/image-fetcher.js'
import dumps, { interrupt, numberBatch, readRecord, statusOf } from '../../plugins/dumps.js'
import { serializeDocument } from '../../plugins/content-negotiation/xml-writer.js'
import type { Batch } from '../../schemas/batch.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { filesUnder } from '../helpers/dumps.js'

const batch: Batch = {
  items: [
    { name: 'A', brand: 'B', images: ['http://x/1.png', 'http://x/2.png'] },
    { name: 'C', images: ['http://x/3.png'] }
  ]
}

t.test('statuses: SUCCESS when all succeed, FAILURE when none, PARTIAL between', async (t) => {
  const s = (...statuses: string[]) => statusOf(statuses.map((status) => ({ status })))
  t.equal(s('SUCCESS', 'SUCCESS'), 'SUCCESS')
  t.equal(s('FAILURE', 'FAILURE'), 'FAILURE')
  t.equal(s('SUCCESS', 'FAILURE'), 'PARTIAL')
  t.equal(s('SUCCESS', 'PENDING'), 'PENDING', 'not decided while an image is pending')
})

t.test('numbering: items 1..n, images 1..m over the whole request, fields kept as sent', async (t) => {
  const items = numberBatch(batch)
  t.same(items.map((i) => i.itemId), [1, 2])
  t.same(items.flatMap((i) => i.images.map((image) => image.imageId)), [1, 2, 3])
  t.same(items[0], {
    itemId: 1,
    name: 'A',
    brand: 'B',
    processStatus: 'PENDING',
    images: [
      { imageId: 1, url: 'http://x/1.png', status: 'PENDING' }, { imageId: 2, url: 'http://x/2.png', status: 'PENDING' }]
  })
  t.notOk('manufacturer' in items[0]!, 'absent optional fields stay absent')
})

t.test('interrupt: pending images fail as INTERRUPTED, finished ones are kept', async (t) => {
  const items = numberBatch(batch)
  items[0]!.images[0] = { imageId: 1, url: 'http://x/1.png', status: 'SUCCESS', location: '/v1/dumps/1/images/1', contentType: 'image/png', bytes: 1, sha256: 'a' }
  const { items: done, interrupted } = interrupt(items)
  t.same(interrupted, [2, 3])
  t.equal(done[0]!.processStatus, 'PARTIAL')
  t.equal(done[1]!.processStatus, 'FAILURE')
  t.match(done[1]!.images[0], { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' } })
})

t.test('a stored record reads back the same from JSON and XML', async (t) => {
  const record = { status: 'PENDING', items: numberBatch(batch) }
  const fromJson = readRecord(Buffer.from(serializeDocument(record, 'json', 'result')), 'json')
  const fromXml = readRecord(Buffer.from(serializeDocument(record, 'xml', 'result')), 'xml')
  t.same(fromXml, fromJson)
  t.same(fromJson, record.items)
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the dumps plugin alone, with persistence and the image fetcher`, async (t) => {
    const database = await createTestDatabase(engine)
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-dumps-'))
    const origin = await startOrigin()
    t.teardown(async () => {
      await origin.close()
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    const build = async (staleAfterMs: number): Promise<FastifyInstance> => {
      const app = Fastify()
      await app.register(persistence, { databaseUrl: database.url })
      await app.register(imageFetcher, { storageDir, timeoutMs: 2000, concurrency: 4, perHost: 4, maxImageBytes: 1e6, allowPrivateNetworks: true })
      await app.register(dumps, { storageDir, staleAfterMs })
      await app.ready()
      t.teardown(() => app.close())
      return app
    }
    const app = await build(60_000)
    const { insertId } = await app.persistence.db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
    const principal = { userid: Number(insertId), username: 'u', plan: 'gold' }
    const admit = async (format: 'json' | 'xml'): Promise<number> => {
      const record = app.dumps.admissionRecord(batch, format)
      const row = await app.persistence.db.insertInto('requests').values({ userid: principal.userid, ...record, status: 0 }).executeTakeFirstOrThrow()
      return Number(row.insertId)
    }

    t.test('process downloads, records and answers', async (t) => {
      const requestId = await admit('json')
      const result = await app.dumps.process(principal, requestId,
        { items: [{ name: 'A', images: [origin.url('/png/1'), origin.url('/status/404')] }] }, 'json')
      t.equal(result.status, 'PARTIAL')
      t.same(await filesUnder(storageDir), [`${principal.userid}/${requestId}/1.png`])
      const record = await app.dumps.find(principal.userid, requestId)
      t.equal(record?.complete, true)
      t.same(JSON.parse(record!.data.toString()), result)
      t.equal(await app.dumps.find(principal.userid + 1, requestId), undefined, "another user's id finds nothing")
      t.match(await app.dumps.image(principal.userid, requestId, 1), { contentType: 'image/png' })
      t.equal(await app.dumps.image(principal.userid, requestId, 2), undefined)
    })

    t.test("recovery leaves a row alone while its instance's heartbeat is fresh", async (t) => {
      const requestId = await admit('xml')
      t.equal(await app.dumps.recoverInterrupted(), 0, 'a fresh row may be in progress elsewhere')
      const stale = engine === 'mysql'
        ? sql`CURRENT_TIMESTAMP(3) - INTERVAL 120 SECOND`
        : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', '-120 seconds')`
      await app.persistence.db.updateTable('requests').set({ heartbeat_at: stale as never }).where('id', '=', requestId).execute()
      t.equal(await app.dumps.recoverInterrupted(), 1, 'a row nobody has marked alive for a minute is recovered')
      const record = await app.dumps.find(principal.userid, requestId)
      t.equal(record?.complete, true)
      t.equal(record?.data.toString().match(/<code>INTERRUPTED<\/code>/g)?.length, 3)
      t.equal(await app.dumps.recoverInterrupted(), 0, 'and only once')
    })

    t.test('the heartbeat keeps a dump in progress from being recovered', async (t) => {
      const requestId = await admit('json')
      const stale = engine === 'mysql'
        ? sql`CURRENT_TIMESTAMP(3) - INTERVAL 120 SECOND`
        : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', '-120 seconds')`
      await app.persistence.db.updateTable('requests').set({ heartbeat_at: stale as never }).where('id', '=', requestId).execute()
      const processing = app.dumps.process(principal, requestId, { items: [{ name: 'slow', images: [origin.url('/delay/300/png/1')] }] }, 'json')
      await origin.waitForRequests(origin.requests + 1)
      await app.dumps.heartbeat()
      t.equal(await app.dumps.recoverInterrupted(), 0, 'a dump this instance is processing is alive')
      t.equal((await processing).status, 'SUCCESS')
    })
  })
}
