import t from 'tap'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import persistence from '../../plugins/persistence.js'
import users from '../../plugins/users.js'
import auth from '../../plugins/auth.js'
import quota from '../../plugins/quota.js'
import retention, { createRetention, RetentionTooShortError } from '../../plugins/retention.js'
import type { Engine } from '../../db/schema.js'
import { createTestDatabase, enginesUnderTest, type TestDatabase } from '../helpers/db.js'

const usersFile = new URL('../../users.txt', import.meta.url).pathname
const plans = { gold: 100, silver: 50, bronze: 25 }
const DAY = 86_400

interface Teardown { teardown: (fn: () => unknown) => void }

/** The retention plugin with what it builds on; its timer is far off: the tests sweep themselves. */
async function appWithRetention (t: Teardown, database: TestDatabase, storageDir: string, options: { batchSize?: number } = {}): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(persistence, { databaseUrl: database.url })
  await app.register(users, { usersFile, plans: Object.keys(plans) })
  await app.register(auth, { tokenExpirySeconds: 1200 })
  await app.register(quota, { plans })
  await app.register(retention, { retentionDays: 2, storageDir, intervalMs: 3_600_000, ...options })
  await app.ready()
  t.teardown(() => app.close())
  return app
}

interface Dump { id: number, userid: number, ageSeconds: number, complete: boolean }

/**
 * A dump as the service leaves it: admitted through the quota, an outcome per image and
 * a file per image in its folder; then aged, its admission and completion moved back.
 */
async function makeDump (app: FastifyInstance, engine: Engine, storageDir: string, userid: number, ageSeconds: number, complete = true): Promise<Dump> {
  const { db } = app.persistence
  const admission = await app.quota.admit(userid, 1000, { dataformat: 'json', data: Buffer.from('{}') })
  const id = admission.requestId!
  await db.insertInto('dump_images').values([1, 2].map((imageId) => ({ request_id: id, image_id: imageId, seq: imageId, status: 'SUCCESS' as const, result: '{}' }))).execute()
  const folder = join(storageDir, String(userid), String(id))
  await mkdir(folder, { recursive: true })
  await writeFile(join(folder, '1.png'), 'png')
  await writeFile(join(folder, '2.jpg'), 'jpg')
  const aged = engine === 'mysql'
    ? sql`CURRENT_TIMESTAMP(3) - INTERVAL ${sql.lit(ageSeconds)} SECOND`
    : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', ${sql.lit(`-${ageSeconds} seconds`)})`
  await db.updateTable('requests').set({ created_at: aged, heartbeat_at: aged, status: complete ? 1 : 0 } as never).where('id', '=', id).execute()
  return { id, userid, ageSeconds, complete }
}

/** What is left of a dump: its row, its outcomes, its files. */
async function leftOf (app: FastifyInstance, storageDir: string, dump: Dump): Promise<{ row: boolean, outcomes: number, files: number }> {
  const { db } = app.persistence
  const row = await db.selectFrom('requests').select('id').where('id', '=', dump.id).executeTakeFirst()
  const outcomes = await db.selectFrom('dump_images').select((eb) => eb.fn.countAll<number>().as('n')).where('request_id', '=', dump.id).executeTakeFirstOrThrow()
  const files = await readdir(join(storageDir, String(dump.userid), String(dump.id))).then((names) => names.length, () => 0)
  return { row: row !== undefined, outcomes: Number(outcomes.n), files }
}

async function temporaryStorage (t: Teardown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'image-dump-retention-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: retention`, async (t) => {
    t.test('removes exactly the dumps older than the setting, batch by batch, and leaves the rest and the quota alone', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const storageDir = await temporaryStorage(t)
      const app = await appWithRetention(t, database, storageDir, { batchSize: 2 })
      const alice = (await app.imageDumpUsers.findByUsername('alice'))!
      const bob = (await app.imageDumpUsers.findByUsername('bob'))!

      const expired = [
        ...await Promise.all([5, 4, 3, 3].map((days) => makeDump(app, engine, storageDir, alice.userid, days * DAY))),
        await makeDump(app, engine, storageDir, bob.userid, 3 * DAY),
        await makeDump(app, engine, storageDir, alice.userid, 2 * DAY + 60)
      ]
      const kept = [
        await makeDump(app, engine, storageDir, alice.userid, 2 * DAY - 60),
        await makeDump(app, engine, storageDir, bob.userid, DAY),
        // still running (or waiting to be resumed): never pulled from under its run
        await makeDump(app, engine, storageDir, alice.userid, 4 * DAY, false),
        // the quota's hour
        await makeDump(app, engine, storageDir, alice.userid, 60),
        await makeDump(app, engine, storageDir, alice.userid, 0)
      ]
      const usageBefore = await app.quota.usage({ userid: alice.userid, plan: 'gold' } as never)
      t.equal(usageBefore.used, 2, 'two dumps in alice\'s hour')

      const report = await app.retention.sweep()
      t.same(report, { removed: expired.length, takenElsewhere: 0 }, 'every expired dump, in batches of two')
      for (const dump of expired) t.same(await leftOf(app, storageDir, dump), { row: false, outcomes: 0, files: 0 }, `the dump of ${dump.ageSeconds} s ago is gone: row, outcomes, files`)
      for (const dump of kept) t.same(await leftOf(app, storageDir, dump), { row: true, outcomes: 2, files: 2 }, `the ${dump.complete ? '' : 'running '}dump of ${dump.ageSeconds} s ago is whole`)
      const folders = await readdir(join(storageDir, String(alice.userid)))
      t.notOk(folders.some((name) => expired.some((dump) => String(dump.id) === name)), 'the expired dumps\' folders are gone too')

      t.same(await app.quota.usage({ userid: alice.userid, plan: 'gold' } as never), usageBefore, 'the quota is untouched')
      const next = await app.quota.admit(alice.userid, 3, { dataformat: 'json', data: null })
      t.match(next, { admitted: true, current: 3 }, 'and still counts the hour exactly')
      t.same(await app.retention.sweep(), { removed: 0, takenElsewhere: 0 }, 'a second sweep finds nothing')
    })

    t.test('several instances sweeping at once remove each dump once, and none fails', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const storageDir = await temporaryStorage(t)
      const apps: FastifyInstance[] = []
      // one at a time: the first migrates and imports the users
      for (let i = 0; i < 3; i++) apps.push(await appWithRetention(t, database, storageDir, { batchSize: 4 }))
      const [first] = apps as [FastifyInstance]
      const userids = await Promise.all(['alice', 'bob', 'carol'].map(async (name) => (await first.imageDumpUsers.findByUsername(name))!.userid))
      const expired: Dump[] = []
      for (let i = 0; i < 30; i++) expired.push(await makeDump(first, engine, storageDir, userids[i % 3]!, 3 * DAY + i))
      const kept = await makeDump(first, engine, storageDir, userids[0]!, DAY)

      const reports = await Promise.all(apps.map((app) => app.retention.sweep()))
      t.equal(reports.reduce((sum, r) => sum + r.removed, 0), expired.length, `each dump removed once (${reports.map((r) => `${r.removed} removed, ${r.takenElsewhere} taken elsewhere`).join('; ')})`)
      for (const dump of expired) t.same(await leftOf(first, storageDir, dump), { row: false, outcomes: 0, files: 0 })
      t.same(await leftOf(first, storageDir, kept), { row: true, outcomes: 2, files: 2 }, 'the newer dump is whole')
    })
  })
}

t.test('a retention shorter than what the quota or an idempotency key counts on is refused', async (t) => {
  const database = await createTestDatabase('sqlite')
  t.teardown(database.drop)
  const app = Fastify()
  await app.register(persistence, { databaseUrl: database.url })
  await app.register(users, { usersFile, plans: Object.keys(plans) })
  await app.register(auth, { tokenExpirySeconds: 1200 })
  await app.register(quota, { plans, idempotencyKeySeconds: 3 * DAY })
  await app.ready()
  t.teardown(() => app.close())
  t.throws(() => createRetention(app, { retentionDays: 2, storageDir: '/nonexistent' }), RetentionTooShortError)
  t.throws(() => createRetention(app, { retentionDays: 0.5, storageDir: '/nonexistent' }), { message: /keep them at least 3 days/ })
  t.ok(createRetention(app, { retentionDays: 3, storageDir: '/nonexistent' }), 'as long as the keys last is enough')
})
