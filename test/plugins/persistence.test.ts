import t from 'tap'
import Fastify from 'fastify'
import { sql, type Kysely } from 'kysely'
import persistence from '../../plugins/persistence.js'
import { connect } from '../../db/connect.js'
import { migrateToLatest, migrateUpTo } from '../../db/migrate.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: migrations`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())

    t.same(await migrateToLatest(db), ['001_initial', '002_exact_usernames_and_login_attempts', '003_idempotency_keys', '004_image_outcomes', '005_dump_events_and_summaries', '006_shared_downloads', '007_admission_numbers', '008_stored_objects', '009_url_validators', '010_run_by'], 'the first run applies every migration')
    t.same(await migrateToLatest(db), [], 'a second run has nothing to do')

    const tables = (await db.introspection.getTables()).map((table) => table.name).sort()
    t.same(tables, ['authentication', 'dump_images', 'login_attempts', 'requests', 'stored_objects', 'tokens', 'url_validators', 'users'])
    const columns = Object.fromEntries((await db.introspection.getTables()).map((table) => [table.name, table.columns.map((c) => c.name).sort()]))
    t.same(columns.users, ['plan', 'userid', 'username'])
    t.same(columns.authentication, ['passwordhash', 'userid'])
    t.same(columns.tokens, ['last_updated', 'user_secret', 'userid'])
    t.same(columns.requests, ['batch_sha256', 'created_at', 'data', 'dataformat', 'deleted', 'failed', 'heartbeat_at', 'id', 'idempotency_key', 'images', 'outcome', 'resumes', 'retry_of', 'run_by', 'status', 'succeeded', 'user_seq', 'userid'])
    t.same(columns.dump_images, ['image_id', 'object_key', 'request_id', 'result', 'seq', 'sha256', 'status', 'stored_as'])
    t.same(columns.stored_objects, ['bytes', 'content_type', 'height', 'object_key', 'sha256', 'userid', 'width'])
    t.same(columns.url_validators, ['etag', 'image_id', 'last_modified', 'request_id', 'url_key', 'userid'])
    t.same(columns.login_attempts, ['attempts', 'throttle_key', 'window_start'])

    const user = await db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
    const userid = Number(user.insertId)
    const first = await db.insertInto('requests').values({ userid, dataformat: 'json', data: null }).executeTakeFirstOrThrow()
    const second = await db.insertInto('requests').values({ userid, dataformat: 'xml', data: null }).executeTakeFirstOrThrow()
    t.not(Number(first.insertId), Number(second.insertId), 'requests has its own key: one user may log many requests')

    // a 5 MB blob: the brief's BLOB column would have stopped at 64 KiB
    const big = Buffer.alloc(5 * 1024 * 1024, 0x61)
    await db.updateTable('requests').set({ data: big }).where('id', '=', Number(first.insertId)).execute()
    const row = await db.selectFrom('requests').select(['data', 'status', 'created_at']).where('id', '=', Number(first.insertId)).executeTakeFirstOrThrow()
    t.equal(row.data?.length, big.length, 'the data column holds a large batch')
    t.notOk(row.status, 'a new request row is incomplete')
    t.ok(row.created_at, 'created_at is set by the database')

    const outcome = { request_id: Number(first.insertId), image_id: 1, status: 'SUCCESS' as const, result: Buffer.from('{}'), seq: 1 }
    await db.insertInto('dump_images').values(outcome).execute()
    await t.rejects(db.insertInto('dump_images').values({ ...outcome, seq: 2 }).execute(), 'one outcome per image of a dump')
    await t.rejects(db.insertInto('dump_images').values({ ...outcome, image_id: 2 }).execute(), 'one outcome per event number of a dump')
    await db.insertInto('dump_images').values({ ...outcome, request_id: Number(second.insertId) }).execute()
    await db.deleteFrom('requests').where('id', '=', Number(first.insertId)).execute()
    t.same((await db.selectFrom('dump_images').select('request_id').execute()).map((r) => r.request_id), [Number(second.insertId)], "a dump's outcomes go with its row")
  })

  t.test(`${engine}: a dump left incomplete before outcomes were recorded per image is resumed from its start`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    await migrateUpTo(db, '002_exact_usernames_and_login_attempts')
    const user = await db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
    await (db as Kysely<any>).insertInto('requests').values({ userid: Number(user.insertId), dataformat: 'json', data: Buffer.from('{}') }).execute() // eslint-disable-line @typescript-eslint/no-explicit-any -- the schema before the migration
    await migrateToLatest(db)
    const row = await db.selectFrom('requests').select(['resumes', 'status']).executeTakeFirstOrThrow()
    t.same([row.resumes, Number(row.status)], [0, 0], 'it counts as its first run, not yet resumed')
  })

  if (engine === 'mysql') {
    t.test('mysql: several instances migrating one database at once', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const connections = [connect(database.url), connect(database.url), connect(database.url)]
      t.teardown(() => Promise.all(connections.map(({ db }) => db.destroy())))
      const applied = await Promise.all(connections.map(({ db }) => migrateToLatest(db)))
      t.same(applied.flat(), ['001_initial', '002_exact_usernames_and_login_attempts', '003_idempotency_keys', '004_image_outcomes', '005_dump_events_and_summaries', '006_shared_downloads', '007_admission_numbers', '008_stored_objects', '009_url_validators', '010_run_by'], 'exactly one instance applied the migrations')
    })
  }

  t.test(`${engine}: usernames compare exactly, on a database made before that migration too`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    await migrateUpTo(db, '001_initial')
    await db.insertInto('users').values({ username: 'bob', plan: 'gold' }).execute()
    await migrateToLatest(db)
    for (const spelling of ['BOB', 'Bob', 'bob ', 'bób']) {
      const found = await db.selectFrom('users').select('userid').where('username', '=', spelling).execute()
      t.same(found, [], `${JSON.stringify(spelling)} finds no one`)
    }
    t.equal((await db.selectFrom('users').select('userid').where('username', '=', 'bob').execute()).length, 1, 'bob is still bob')
    await db.insertInto('users').values({ username: 'Bob', plan: 'gold' }).execute()
    t.pass('another spelling is another name to the unique index')
  })

  t.test(`${engine}: an idempotency key names one row per user, compared exactly, on a database made before that migration too`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    await migrateUpTo(db, '002_exact_usernames_and_login_attempts')
    const ids = []
    for (const username of ['u', 'v']) ids.push(Number((await db.insertInto('users').values({ username, plan: 'gold' }).executeTakeFirstOrThrow()).insertId))
    const [u, v] = ids as [number, number]
    await db.insertInto('requests').values([{ userid: u, dataformat: 'json', data: null }, { userid: u, dataformat: 'json', data: null }]).execute()
    await migrateToLatest(db)

    const keyed = (userid: number, key: string | null) =>
      db.insertInto('requests').values({ userid, dataformat: 'json', data: null, idempotency_key: key, batch_sha256: Buffer.alloc(32, 7) }).execute()
    await keyed(u, 'abc')
    await t.rejects(keyed(u, 'abc'), /idempotency_key/, 'the same user cannot log one key twice')
    await keyed(v, 'abc')
    t.pass('another user may use the same key')
    await keyed(u, 'ABC')
    t.pass('keys compare exactly: case counts')
    await keyed(u, null)
    await keyed(u, null)
    t.pass('rows without a key never collide (the rows from before the migration have none)')
    const row = await db.selectFrom('requests').select(['idempotency_key', 'batch_sha256']).where('userid', '=', u).where('idempotency_key', '=', 'abc').executeTakeFirstOrThrow()
    t.same(Buffer.from(row.batch_sha256!), Buffer.alloc(32, 7), 'the batch digest is kept whole')
  })

  t.test(`${engine}: the plugin alone in a bare app`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const app = Fastify()
    await app.register(persistence, { databaseUrl: database.url })
    await app.ready()
    t.equal(app.persistence.engine, engine)
    t.same(await app.persistence.health(), { ok: true })
    const { rows } = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM users`.execute(app.persistence.db)
    t.equal(Number(rows[0]!.n), 0, 'the schema is in place')
    await app.close()
    const report = await app.persistence.health()
    t.equal(report.ok, false, 'after close the database is reported unreachable')
    t.match(report, { problem: /^database unreachable: / })
  })
}

t.test('an unsupported database URL fails the registration with a clear message', async (t) => {
  const app = Fastify()
  app.register(persistence, { databaseUrl: 'postgres://user:secret@host/db' })
  await t.rejects(async () => { await app.ready() }, { message: /unsupported database URL \(expected mysql:\/\/… or sqlite:…\): postgres:\/\/\*\*\*@host\/db/ })
})
