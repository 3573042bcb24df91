import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import persistence from '../../plugins/persistence.js'
import users from '../../plugins/users.js'
import auth from '../../plugins/auth.js'
import quota from '../../plugins/quota.js'
import { sha256Hex } from '../../lib/password.js'
import type { Engine } from '../../db/schema.js'
import { createTestDatabase, enginesUnderTest, type TestDatabase } from '../helpers/db.js'
import { issueToken, sampleUsers } from '../helpers/users.js'

const usersFile = new URL('../../users.txt', import.meta.url).pathname
const plans = { gold: 100, silver: 50, bronze: 25 }

interface Teardown { teardown: (fn: () => unknown) => void }

/** The quota plugin alone (with the auth it builds on) guarding one route that logs nothing else. */
async function bareApp (t: Teardown, database: TestDatabase): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(persistence, { databaseUrl: database.url })
  await app.register(users, { usersFile, plans: Object.keys(plans) })
  await app.register(auth, { tokenExpirySeconds: 1200 })
  await app.register(quota, { plans })
  app.post('/limited', {
    onRequest: app.imageDumpAuth.authenticate,
    preValidation: async (request) => { request.quotaRecord = { dataformat: 'json', data: Buffer.from('{"test":true}') } },
    preHandler: app.quota.enforce
  }, async (request) => ({ requestId: request.admittedRequestId }))
  await app.ready()
  t.teardown(() => app.close())
  return app
}

async function tokenFor (app: FastifyInstance, user: { username: string, password: string }): Promise<string> {
  return (await issueToken(app, user.username, sha256Hex(user.password)))!.access_token
}

const dump = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'POST', url: '/limited', headers: { authorization: `Bearer ${token}` } })

async function rowsOf (app: FastifyInstance, username: string): Promise<number> {
  const row = await app.persistence.db.selectFrom('requests').innerJoin('users', 'users.userid', 'requests.userid')
    .select((eb) => eb.fn.countAll<number>().as('n')).where('users.username', '=', username).executeTakeFirstOrThrow()
  return Number(row.n)
}

/** Moves a user's logged requests back in time, as if they had been made `seconds` earlier. */
async function backdate (app: FastifyInstance, engine: Engine, username: string, seconds: number, limit?: number): Promise<void> {
  const user = (await app.imageDumpUsers.findByUsername(username))!
  const ids = await app.persistence.db.selectFrom('requests').select('id').where('userid', '=', user.userid)
    .orderBy('created_at').orderBy('id').$if(limit !== undefined, (q) => q.limit(limit!)).execute()
  if (ids.length === 0) return
  const shifted = engine === 'mysql'
    ? sql`created_at - INTERVAL ${sql.lit(seconds)} SECOND`
    : sql`strftime('%Y-%m-%d %H:%M:%f', created_at, ${sql.lit(`-${seconds} seconds`)})`
  await app.persistence.db.updateTable('requests').set({ created_at: shifted } as never).where('id', 'in', ids.map((r) => r.id)).execute()
}

/** Logs `n` requests for a user directly, as earlier admissions would have. */
async function prefill (app: FastifyInstance, username: string, n: number): Promise<void> {
  const user = (await app.imageDumpUsers.findByUsername(username))!
  const rows = Array.from({ length: n }, () => ({ userid: user.userid, dataformat: 'json' as const, data: null, status: 1 }))
  await app.persistence.db.insertInto('requests').values(rows).execute()
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: quota`, async (t) => {
    t.test('bronze: 25 per hour, the 26th gets 429 and writes nothing', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const app = await bareApp(t, database)
      const token = await tokenFor(app, sampleUsers.bronze)
      const ids = new Set<number>()
      for (let i = 1; i <= 25; i++) {
        const response = await dump(app, token)
        t.equal(response.statusCode, 200, `dump ${i} admitted`)
        ids.add(response.json().requestId)
        t.equal(response.headers['ratelimit-limit'], '25')
        t.equal(response.headers['ratelimit-remaining'], String(25 - i))
      }
      t.equal(ids.size, 25, 'every admitted dump has its own log row')
      const refused = await dump(app, token)
      t.equal(refused.statusCode, 429)
      t.match(refused.json().message, /quota exceeded: the bronze plan allows 25 dumps per 60 minutes; the next slot frees in \d+ s/)
      const retryAfter = Number(refused.headers['retry-after'])
      t.ok(retryAfter > 3500 && retryAfter <= 3600, `Retry-After (${retryAfter}) is when the oldest dump leaves the hour`)
      t.equal(refused.headers['ratelimit-remaining'], '0')
      t.equal(await rowsOf(app, 'carol'), 25, 'the refused dump left no row')

      const usage = await app.quota.usage((await app.imageDumpUsers.findByUsername('carol'))! as never)
      t.match(usage, { plan: 'bronze', limit: 25, used: 25, remaining: 0 })
      t.equal(usage.resetSeconds, retryAfter, 'GET /v1/quota and the headers agree')

      // one hour later for the oldest dump only: exactly one slot frees
      await backdate(app, engine, 'carol', 3601, 1)
      const next = await dump(app, token)
      t.equal(next.statusCode, 200, 'the first dump of the next window gets through')
      t.equal(next.headers['ratelimit-remaining'], '0')
      t.equal((await dump(app, token)).statusCode, 429, 'and only one')
    })

    t.test('silver: 50 and gold: 100 per hour', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const app = await bareApp(t, database)
      for (const [user, username, limit] of [[sampleUsers.silver, 'bob', 50], [sampleUsers.gold, 'alice', 100]] as const) {
        const token = await tokenFor(app, user)
        await prefill(app, username, limit - 1)
        const last = await dump(app, token)
        t.equal(last.statusCode, 200, `${username}: dump ${limit} admitted`)
        t.equal(last.headers['ratelimit-limit'], String(limit))
        t.equal((await dump(app, token)).statusCode, 429, `${username}: dump ${limit + 1} refused`)
        t.equal(await rowsOf(app, username), limit)
      }
    })

    t.test('rows older than an hour do not count', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const app = await bareApp(t, database)
      await prefill(app, 'carol', 25)
      await backdate(app, engine, 'carol', 3601)
      const response = await dump(app, await tokenFor(app, sampleUsers.bronze))
      t.equal(response.statusCode, 200)
      t.equal(response.headers['ratelimit-remaining'], '24')
    })

    t.test('40 concurrent dumps from one bronze user admit exactly 25', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const app = await bareApp(t, database)
      const token = await tokenFor(app, sampleUsers.bronze)
      const responses = await Promise.all(Array.from({ length: 40 }, () => dump(app, token)))
      const codes = responses.map((r) => r.statusCode)
      t.equal(codes.filter((c) => c === 200).length, 25, 'admitted')
      t.equal(codes.filter((c) => c === 429).length, 15, 'refused')
      t.equal(await rowsOf(app, 'carol'), 25)
    })

    t.test('a restart forgets nothing', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const first = await bareApp(t, database)
      await prefill(first, 'carol', 25)
      await first.close()
      const second = await bareApp(t, database)
      t.equal((await dump(second, await tokenFor(second, sampleUsers.bronze))).statusCode, 429)
    })

    t.test('the quota never fails open: a database it cannot reach answers 503', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const app = await bareApp(t, database)
      const token = await tokenFor(app, sampleUsers.bronze)
      // a transaction over a closed database fails on every engine
      const service = app.quota
      await app.persistence.db.destroy()
      const error = await service.admit(1, 25, { dataformat: 'json', data: null }).catch((e: unknown) => e)
      t.match(error, { statusCode: 503, message: /the quota cannot be checked right now .*nothing was admitted/ })
      t.ok(token)
    })
  })
}

t.test('an unknown plan is refused clearly', async (t) => {
  const database = await createTestDatabase('sqlite')
  t.teardown(database.drop)
  const app = await bareApp(t, database)
  t.throws(() => app.quota.limitFor('platinum'), { statusCode: 503, message: 'no quota is configured for plan "platinum"' })
})

const noMysql = process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === ''
t.test('mysql: a user row locked elsewhere is waited for a bounded time, retried, then answered 503', { skip: noMysql && 'MYSQL_URL is not set' }, async (t) => {
  const database = await createTestDatabase('mysql')
  t.teardown(database.drop)
  const app = Fastify()
  await app.register(persistence, { databaseUrl: database.url })
  await app.register(users, { usersFile, plans: Object.keys(plans) })
  await app.register(auth, { tokenExpirySeconds: 1200 })
  await app.register(quota, { plans, lockWaitTimeoutSeconds: 1, maxAttempts: 2 })
  await app.ready()
  t.teardown(() => app.close())
  const carol = (await app.imageDumpUsers.findByUsername('carol'))!

  // another transaction holds carol's row lock, as a stuck admission elsewhere would
  const { createConnection } = await import('mysql2/promise')
  const holder = await createConnection({ uri: database.url })
  t.teardown(() => holder.end())
  await holder.query('START TRANSACTION')
  await holder.query('SELECT userid FROM users WHERE userid = ? FOR UPDATE', [carol.userid])

  const error = await app.quota.admit(carol.userid, 25, { dataformat: 'json', data: null }).catch((e: unknown) => e)
  t.match(error, { statusCode: 503, message: /the quota cannot be checked right now \(.*Lock wait timeout/ }, 'two attempts of one second, then 503')
  await holder.query('ROLLBACK')
  t.equal(await rowsOf(app, 'carol'), 0, 'nothing was admitted')
  const admitted = await app.quota.admit(carol.userid, 25, { dataformat: 'json', data: null })
  t.equal(admitted.admitted, true, 'once the lock is released, admission works again')
})
