/**
 * Password guessing against POST /v1/auth/token: bursts, rotating IPv6 addresses, one
 * address spraying many usernames, key floods, several instances, look-alike usernames,
 * and floods of bogus logins that would starve the downloads of their threads.
 *
 * Decisions asserted here:
 * - Every attempt is counted before its password is checked: 5 per username and client
 *   network, 30 per network across usernames, per 15 minutes. A success clears its
 *   username's count and does not count against its network.
 * - A client network is an IPv4 address or an IPv6 /64.
 * - The count lives in the database: it survives any number of other keys and is shared
 *   by every instance on one MySQL.
 * - At most one argon2 verification runs at a time per instance; 32 more may wait, the
 *   rest are answered 503 with Retry-After at once.
 * - Usernames are compared exactly: case, accents and trailing spaces make another name.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, sampleUsers } from '../helpers/app.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { sha256Hex } from '../../lib/password.js'
import { createLoginThrottle } from '../../lib/login-throttle.js'
import { createLoginAttempts } from '../../db/login-attempts.js'

const { username, password } = sampleUsers.bronze
const right = sha256Hex(password)
const guess = (i: number): string => sha256Hex(`guess ${i}`)

function attempt (app: FastifyInstance, name: string, hash: string, remoteAddress = '192.0.2.10') {
  return app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: name, passwordHash: hash }, remoteAddress })
}

function tally (statuses: number[]): Record<number, number> {
  const counts: Record<number, number> = {}
  for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1
  return counts
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: login throttle`, async (t) => {
    t.test('29 wrong guesses and the right password at once: only 5 are checked', async (t) => {
      const { app } = await buildTestApp(t, engine)
      const hashes = [...Array.from({ length: 29 }, (_, i) => guess(i)), right]
      const statuses = (await Promise.all(hashes.map((hash) => attempt(app, username, hash)))).map((r) => r.statusCode)
      const counts = tally(statuses)
      t.equal((counts[401] ?? 0) + (counts[200] ?? 0), 5, `exactly 5 attempts reached the password check (${JSON.stringify(counts)})`)
      t.equal(counts[429], 25, 'the other 25 were refused before it')
    })

    t.test('an IPv6 client counts as its /64', async (t) => {
      const { app } = await buildTestApp(t, engine)
      for (let i = 1; i <= 5; i++) {
        t.equal((await attempt(app, username, guess(i), `2001:db8:1:2::${i.toString(16)}`)).statusCode, 401, `guess ${i} from another address of the /64`)
      }
      const sixth = await attempt(app, username, right, '2001:db8:1:2:ffff:ffff:ffff:ffff')
      t.equal(sixth.statusCode, 429, 'the sixth, from yet another address of the same /64, waits')
      t.equal((await attempt(app, username, right, '2001:db8:1:3::1')).statusCode, 200, 'the next /64 is another client')
    })

    t.test('one network spraying many usernames is stopped after 30 attempts', async (t) => {
      const { app } = await buildTestApp(t, engine)
      const statuses: number[] = []
      for (let i = 0; i < 31; i++) statuses.push((await attempt(app, `user${i}`, guess(i), '198.51.100.7')).statusCode)
      t.same(tally(statuses.slice(0, 30)), { 401: 30 }, 'thirty usernames tried')
      const last = await attempt(app, 'user30', guess(30), '198.51.100.7')
      t.equal(last.statusCode, 429)
      t.match(last.json().message, /^too many failed logins from this network; try again in \d+ s$/)
      t.ok(Number(last.headers['retry-after']) > 0)
      t.equal(statuses[30], 429, 'the 31st username, too')
    })

    t.test('a success clears its username and does not count against its network', async (t) => {
      const { app } = await buildTestApp(t, engine)
      // 35 attempts from one network, 28 of them failures: over 30 only if successes counted
      for (let round = 0; round < 7; round++) {
        for (let i = 0; i < 4; i++) t.equal((await attempt(app, username, guess(i))).statusCode, 401)
        t.equal((await attempt(app, username, right)).statusCode, 200, `round ${round}: four typos, then the right password`)
      }
    })

    t.test('a flood of other keys does not make the store forget a throttled one', async (t) => {
      const { app } = await buildTestApp(t, engine)
      for (let i = 1; i <= 5; i++) await attempt(app, username, guess(i))
      // 12 000 keys of other clients, written as a flood of attempts would leave them (the
      // in-memory store of @fastify/rate-limit forgot the oldest past 5000)
      const { db } = app.persistence
      const window = (await db.selectFrom('login_attempts').select('window_start').executeTakeFirstOrThrow()).window_start
      for (let chunk = 0; chunk < 12; chunk++) {
        await db.insertInto('login_attempts').values(Array.from({ length: 1000 }, () => ({ throttle_key: randomBytes(32), attempts: 1, window_start: window }))).execute()
      }
      const throttle = createLoginThrottle(createLoginAttempts(db, app.persistence.engine))
      for (let i = 0; i < 300; i++) await throttle.attempt(`203.0.113.${i % 250}`, `flood-${i}`)
      t.equal((await attempt(app, username, right)).statusCode, 429, 'still throttled after 12 000 other keys')
    })

    // on SQLite: two connections to one file, as the processes of WORKERS have
    t.test('the count is shared by every instance on one database', async (t) => {
      const database = await createTestDatabase(engine)
      t.teardown(database.drop)
      const one = await buildTestApp(t, engine, {}, database)
      const two = await buildTestApp(t, engine, {}, database)
      for (let i = 1; i <= 3; i++) t.equal((await attempt(one.app, username, guess(i))).statusCode, 401)
      for (let i = 4; i <= 5; i++) t.equal((await attempt(two.app, username, guess(i))).statusCode, 401)
      t.equal((await attempt(one.app, username, right)).statusCode, 429, 'the sixth attempt waits, whichever instance it reaches')
      t.equal((await attempt(two.app, username, right)).statusCode, 429)
    })

    t.test('usernames are compared exactly', async (t) => {
      const { app } = await buildTestApp(t, engine)
      const bob = sampleUsers.silver
      for (const spelling of ['BOB', 'Bob', 'bob ', ' bob', 'bób', 'bob\u0000']) {
        const response = await attempt(app, spelling, sha256Hex(bob.password), `192.0.2.${spelling.length + 100}`)
        t.equal(response.statusCode, 401, `${JSON.stringify(spelling)} is not bob`)
      }
      t.equal((await attempt(app, bob.username, sha256Hex(bob.password))).statusCode, 200, 'bob is bob')
    })

    t.test('bogus logins cannot occupy the thread pool', async (t) => {
      const { app } = await buildTestApp(t, engine)
      const responses = await Promise.all(Array.from({ length: 60 }, (_, i) =>
        attempt(app, `nobody-${i}`, guess(i), `10.${i}.0.1`)))
      const counts = tally(responses.map((r) => r.statusCode))
      t.equal(app.imageDumpAuth.passwordPeakConcurrency, 1, 'one argon2 verification at a time')
      t.ok((counts[401] ?? 0) >= 33, `one running and 32 waiting are checked (${JSON.stringify(counts)})`)
      t.ok((counts[503] ?? 0) >= 1, 'those that find the queue full are turned away at once')
      t.equal((counts[401] ?? 0) + (counts[503] ?? 0), 60)
      const busy = responses.find((r) => r.statusCode === 503)!
      t.equal(busy.headers['retry-after'], '1')
      t.match(busy.json().message, /^too many logins are being checked right now; try again in a second$/)
    })
  })
}

t.test('a client network', async (t: Test) => {
  const { clientNetwork } = await import('../../lib/ip.js')
  t.equal(clientNetwork('192.0.2.1'), '192.0.2.1')
  t.equal(clientNetwork('::ffff:192.0.2.1'), '192.0.2.1', 'IPv4-mapped IPv6 is its IPv4 address')
  t.equal(clientNetwork('2001:db8:a:b:c:d:e:f'), '2001:db8:a:b::/64')
  t.equal(clientNetwork('2001:db8:a:b::1'), clientNetwork('2001:db8:a:b:ffff::9'), 'one /64, one network')
  t.not(clientNetwork('2001:db8:a:b::1'), clientNetwork('2001:db8:a:c::1'))
  t.equal(clientNetwork('fe80::1%eth0'), 'fe80:0:0:0::/64', 'a zone index is ignored')
  t.equal(clientNetwork('not an address'), 'not an address')
})
