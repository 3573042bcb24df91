import t from 'tap'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import persistence from '../../plugins/persistence.js'
import imageFetcher from '../../plugins/image-fetcher.js'
import dumps, { interrupt, numberBatch, readRecord, statusOf, type DumpsOptions } from '../../plugins/dumps.js'
import { createDumpImages } from '../../db/dump-images.js'
import { serializeDocument } from '../../plugins/content-negotiation/xml-writer.js'
import type { Batch } from '../../schemas/batch.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { filesUnder } from '../helpers/dumps.js'
import { makePng } from '../helpers/images.js'
import { createConnection } from 'mysql2/promise'

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
  const record = { status: 'PENDING', items: numberBatch({ items: [...batch.items, { name: '  spaced <&> "quoted"  ', category: '', images: ['http://x/a?b=1&c=2'] }] }) }
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
    const build = async (options: Partial<DumpsOptions> = {}): Promise<FastifyInstance> => {
      const app = Fastify()
      await app.register(persistence, { databaseUrl: database.url })
      await app.register(imageFetcher, { storageDir, timeoutMs: 2000, concurrency: 4, perHost: 4, maxImageBytes: 1e6, allowPrivateNetworks: true })
      await app.register(dumps, { storageDir, staleAfterMs: 60_000, ...options })
      await app.ready()
      t.teardown(() => app.close())
      return app
    }
    const app = await build()
    const { insertId } = await app.persistence.db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
    const principal = { userid: Number(insertId), username: 'u', plan: 'gold' }
    const admit = async (format: 'json' | 'xml', admitted: Batch = batch): Promise<number> => {
      const { runBy, ...record } = app.dumps.admissionRecord(admitted, format)
      const row = await app.persistence.db.insertInto('requests').values({ userid: principal.userid, ...record, run_by: runBy, status: 0 }).executeTakeFirstOrThrow()
      return Number(row.insertId)
    }
    const makeStale = async (requestId: number): Promise<void> => {
      const stale = engine === 'mysql'
        ? sql`CURRENT_TIMESTAMP(3) - INTERVAL 120 SECOND`
        : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', '-120 seconds')`
      await app.persistence.db.updateTable('requests').set({ heartbeat_at: stale as never }).where('id', '=', requestId).execute()
    }
    const row = async (requestId: number) =>
      await app.persistence.db.selectFrom('requests').select(['status', 'data', 'resumes']).where('id', '=', requestId).executeTakeFirstOrThrow()

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
      const outcomes = await app.persistence.db.selectFrom('dump_images').select(['image_id', 'status']).where('request_id', '=', requestId).orderBy('image_id').execute()
      t.same(outcomes, [{ image_id: 1, status: 'SUCCESS' }, { image_id: 2, status: 'FAILURE' }], 'each outcome has its row')
    })

    t.test('an image is served only once its success is recorded', async (t) => {
      const requestId = await admit('json')
      const folder = join(storageDir, String(principal.userid), String(requestId))
      await mkdir(folder, { recursive: true })
      await writeFile(join(folder, '1.png'), makePng(1))
      t.equal(await app.dumps.image(principal.userid, requestId, 1), undefined, 'a file its running dump has not recorded is not served')
      await createDumpImages(app.persistence.db, engine).record(requestId, 0, [{ imageId: 1, url: 'http://x/1.png', status: 'SUCCESS', location: '', contentType: 'image/png', bytes: 1, sha256: 'a' }])
      t.match(await app.dumps.image(principal.userid, requestId, 1), { contentType: 'image/png' }, 'recorded: served')
      const legacy = await admit('json')
      await mkdir(join(storageDir, String(principal.userid), String(legacy)), { recursive: true })
      await writeFile(join(storageDir, String(principal.userid), String(legacy), '1.png'), makePng(1))
      await app.persistence.db.updateTable('requests').set({ status: 1 }).where('id', '=', legacy).execute()
      t.match(await app.dumps.image(principal.userid, legacy, 1), { contentType: 'image/png' }, 'a complete dump recorded before outcomes had rows: served by its file')
      t.equal(await app.dumps.image(principal.userid + 1, legacy, 1), undefined, 'but not to another user')
    })

    t.test("resuming leaves a row alone while its instance's heartbeat is fresh, and takes a stale one once", async (t) => {
      const requestId = await admit('xml', { items: [{ name: 'A', images: [origin.url('/png/1'), origin.url('/png/2')] }] })
      t.equal(await app.dumps.resumeUnfinished(), 0, 'a fresh row may be in progress elsewhere')
      await makeStale(requestId)
      origin.resetCounters()
      t.equal(await app.dumps.resumeUnfinished(), 1, 'a row nobody has marked alive for a minute is taken')
      t.equal(await app.dumps.resumeUnfinished(), 0, 'and only once')
      await app.dumps.settled()
      const resumed = await row(requestId)
      t.equal(Number(resumed.status), 1, 'and completed')
      t.equal(resumed.resumes, 1)
      t.match(Buffer.from(resumed.data!).toString(), `<result><requestId>${requestId}</requestId><status>SUCCESS</status>`)
      t.same([...origin.paths].sort(), ['/png/1', '/png/2'], 'its images downloaded once each')
    })

    t.test('two instances sweeping at once: exactly one takes the dump', async (t) => {
      const other = await build()
      const requestId = await admit('json', { items: [{ name: 'A', images: [origin.url('/png/3')] }] })
      await makeStale(requestId)
      origin.resetCounters()
      const taken = await Promise.all([app.dumps.resumeUnfinished(), other.dumps.resumeUnfinished(), app.dumps.resumeUnfinished(), other.dumps.resumeUnfinished()])
      t.equal(taken.reduce((a, b) => a + b, 0), 1, `one claim of four succeeds (${taken.join(', ')})`)
      await Promise.all([app.dumps.settled(), other.dumps.settled()])
      t.equal((await row(requestId)).resumes, 1)
      t.same(origin.paths, ['/png/3'], 'downloaded once')
    })

    t.test('a dump that cannot be resumed is completed as interrupted, keeping what was recorded', async (t) => {
      const requestId = await admit('json', { items: [{ name: 'A', images: [origin.url('/png/1'), origin.url('/png/2')] }] })
      const one = makePng(1)
      await createDumpImages(app.persistence.db, engine).record(requestId, 0, [{ imageId: 1, url: origin.url('/png/1'), status: 'SUCCESS', location: `/v1/dumps/${requestId}/images/1`, contentType: 'image/png', bytes: one.length, sha256: 'x' }])
      const folder = join(storageDir, String(principal.userid), String(requestId))
      await mkdir(folder, { recursive: true })
      await writeFile(join(folder, '1.png'), one)
      await writeFile(join(folder, '2.png'), makePng(2))
      // resumed five times already: the next claim is the sixth
      await app.persistence.db.updateTable('requests').set({ resumes: 5 }).where('id', '=', requestId).execute()
      await makeStale(requestId)
      origin.resetCounters()
      t.equal(await app.dumps.resumeUnfinished(), 1)
      await app.dumps.settled()
      const closed = JSON.parse(Buffer.from((await row(requestId)).data!).toString())
      t.match(closed, { requestId, status: 'PARTIAL', items: [{ images: [{ imageId: 1, status: 'SUCCESS' }, { imageId: 2, status: 'FAILURE', error: { code: 'INTERRUPTED' } }] }] })
      t.same(origin.paths, [], 'nothing downloaded')
      t.same(await filesUnder(folder), ['1.png'], 'the recorded image stays, the unrecorded file goes')

      const unreadable = await admit('json')
      await app.persistence.db.updateTable('requests').set({ data: Buffer.from('{"items": [oops') }).where('id', '=', unreadable).execute()
      await makeStale(unreadable)
      t.equal(await app.dumps.resumeUnfinished(), 1)
      await app.dumps.settled()
      const after = await row(unreadable)
      t.equal(Number(after.status), 1, 'a record that cannot be read is completed too, not retried forever')
      t.same(JSON.parse(Buffer.from(after.data!).toString()), { requestId: unreadable, status: 'FAILURE', items: [] })
    })

    t.test('the heartbeat keeps a dump in progress from being taken', async (t) => {
      const requestId = await admit('json')
      await makeStale(requestId)
      const processing = app.dumps.process(principal, requestId, { items: [{ name: 'slow', images: [origin.url('/delay/300/png/1')] }] }, 'json')
      await origin.waitForRequests(origin.requests + 1)
      await app.dumps.heartbeat()
      t.equal(await app.dumps.resumeUnfinished(), 0, 'a dump this instance is processing is alive')
      t.equal((await processing).status, 'SUCCESS')
    })
  })
}

t.test('mysql: a run that cannot mark itself alive for its lease stops its downloads, and is resumed later', { skip: process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === '' ? 'MYSQL_URL is not set' : false }, async (t) => {
  // A row lock held by another connection makes this instance's heartbeat hang, as a
  // database that stopped answering would; SQLite has no such partial outage to stage.
  const database = await createTestDatabase('mysql')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-lease-'))
  const origin = await startOrigin()
  const app = Fastify()
  t.teardown(async () => {
    await app.close()
    await origin.close()
    await database.drop()
    await rm(storageDir, { recursive: true, force: true })
  })
  await app.register(persistence, { databaseUrl: database.url })
  await app.register(imageFetcher, { storageDir, timeoutMs: 10_000, concurrency: 4, perHost: 4, maxImageBytes: 1e6, allowPrivateNetworks: true })
  // stale after 1 s: heartbeats every 125 ms, a lease of 500 ms
  await app.register(dumps, { storageDir, staleAfterMs: 1000 })
  await app.ready()
  const { insertId } = await app.persistence.db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
  const principal = { userid: Number(insertId), username: 'u', plan: 'gold' }
  const leased: Batch = { items: [{ name: 'A', images: [origin.url('/png/1'), origin.url('/held/lease/png/2')] }] }
  const { runBy, ...record } = app.dumps.admissionRecord(leased, 'json')
  const row = await app.persistence.db.insertInto('requests').values({ userid: principal.userid, ...record, run_by: runBy, status: 0 }).executeTakeFirstOrThrow()
  const requestId = Number(row.insertId)
  const processing = app.dumps.process(principal, requestId, leased, 'json')
  processing.catch(() => {})
  await origin.waitForRequests(2)
  const recorded = async () => (await app.persistence.db.selectFrom('dump_images').select('image_id').where('request_id', '=', requestId).execute()).length
  for (const deadline = Date.now() + 10_000; await recorded() < 1;) {
    if (Date.now() > deadline) throw new Error('image 1 was not recorded')
    await new Promise((resolve) => setTimeout(resolve, 20))
  }

  const blocker = await createConnection({ uri: database.url })
  await blocker.query('START TRANSACTION')
  await blocker.query('SELECT id FROM requests WHERE id = ? FOR UPDATE', [requestId])
  await t.rejects(processing, { statusCode: 503, message: `dump ${requestId}: stopped (unreachable) before it was complete` }, 'the run stopped by itself')
  t.same(await filesUnder(storageDir), [`${principal.userid}/${requestId}/1.png`], 'its download was stopped, and left nothing')
  await blocker.query('ROLLBACK')
  await blocker.end()

  origin.release('lease')
  // the sweep (every second) takes it over once its heartbeat is a second old
  for (const deadline = Date.now() + 20_000; ;) {
    const state = await app.persistence.db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', requestId).executeTakeFirstOrThrow()
    if (Number(state.status) === 1) {
      t.ok(state.resumes >= 1, 'completed by a resumed run')
      break
    }
    if (Date.now() > deadline) throw new Error('the dump was not resumed')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  await app.dumps.settled()
  t.same(origin.paths.filter((p) => p === '/png/1'), ['/png/1'], 'the recorded image was not downloaded again')
  t.equal(origin.paths.filter((p) => p === '/held/lease/png/2').length, 2, 'the stopped one was')
  t.same(await filesUnder(storageDir), [`${principal.userid}/${requestId}/1.png`, `${principal.userid}/${requestId}/2.png`])
})
