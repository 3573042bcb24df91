/**
 * Load shedding: past a limit, the API answers 503 with Retry-After in the client's format
 * (and counts it), while health and metrics still answer; within the limits, and with
 * the checks off, nothing is shed. The heap limit is set below any heap, so the test does
 * not depend on how busy the machine is.
 *
 * SQLite only: shedding does not depend on the engine.
 */
import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../../app.js'
import { defaults, loadConfig, type Config } from '../../config.js'
import { createTestDatabase } from '../helpers/db.js'
import { scrape, series } from '../helpers/metrics.js'

async function appWith (t: Test, loadShedding: Partial<Config['loadShedding']>): Promise<FastifyInstance> {
  const database = await createTestDatabase('sqlite')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-shed-'))
  const config = loadConfig({ DATABASE_URL: database.url, STORAGE_DIR: storageDir, USERS_FILE: new URL('../../users.txt', import.meta.url).pathname, LOG_LEVEL: 'silent' })
  const app = await buildApp({ ...config, loadShedding: { ...config.loadShedding, sampleIntervalMs: 10, ...loadShedding } })
  t.teardown(async () => {
    await app.close()
    await database.drop()
    await rm(storageDir, { recursive: true, force: true })
  })
  return app
}

/**
 * Asks until the API is shed: the first sample is taken one interval (10 ms here) after
 * the start. Bounded, and it asks again only after a timer turn, so each try sees a new sample.
 */
async function untilShed (app: FastifyInstance): Promise<number> {
  for (let tries = 1; tries <= 500; tries++) {
    const response = await app.inject({ method: 'GET', url: '/v1/quota' })
    if (response.statusCode === 503) return tries
    await sleep(10)
  }
  throw new Error('never shed in 500 tries')
}

t.test('past the heap limit, the API is answered 503 with Retry-After; health and metrics still answer', async (t) => {
  const app = await appWith(t, { maxHeapUsedBytes: 1, maxEventLoopDelayMs: 0, retryAfterSeconds: 7 })
  await untilShed(app)
  const json = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'alice', passwordHash: '0'.repeat(64) } })
  t.equal(json.statusCode, 503)
  t.equal(json.headers['retry-after'], '7')
  t.same(json.json(), { statusCode: 503, error: 'Service Unavailable', message: 'the service is overloaded right now; try again after the time in Retry-After' })
  const xml = await app.inject({ method: 'GET', url: '/v1/quota', headers: { accept: 'application/xml' } })
  t.equal(xml.statusCode, 503)
  t.match(xml.body, /^<\?xml[^>]*><error><statusCode>503<\/statusCode>/, 'in XML to a client that reads XML')

  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'health answers')
  const metrics = await scrape(app)
  t.ok((metrics.get(series('image_dump_load_shed_total', { reason: 'heap_used' })) ?? 0) >= 3, 'every shed request is counted, by reason')
})

/** Keeps the loop busy for `ms`, in one piece: one long task. */
function busy (ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end) { /* the long task */ }
}

t.test('one long task does not shed', async (t) => {
  const app = await appWith(t, { maxHeapUsedBytes: 0, maxEventLoopDelayMs: 100, delayWindowMs: 200 })
  busy(1000)
  // the windows that follow, each judged: none may shed
  for (let i = 0; i < 10; i++) {
    t.equal((await app.inject({ method: 'GET', url: '/v1/quota' })).statusCode, 401, `after the task, try ${i + 1}`)
    await sleep(60)
  }
})

t.test('a loop late for a whole window sheds, and says why', async (t) => {
  const app = await appWith(t, { maxHeapUsedBytes: 0, maxEventLoopDelayMs: 100, delayWindowMs: 600, retryAfterSeconds: 3 })
  // every timer tick comes 150 ms late, as under a queue of work; asked between the pieces
  let shed: { statusCode: number, headers: Record<string, unknown> } | undefined
  for (let piece = 0; piece < 40 && shed === undefined; piece++) {
    busy(150)
    await new Promise((resolve) => setImmediate(resolve))
    const response = await app.inject({ method: 'GET', url: '/v1/quota' })
    if (response.statusCode === 503) shed = response
  }
  t.equal(shed?.statusCode, 503, 'shed')
  t.equal(shed?.headers['retry-after'], '3')
  const metrics = await scrape(app)
  t.ok((metrics.get(series('image_dump_load_shed_total', { reason: 'event_loop_delay' })) ?? 0) >= 1, 'counted as event_loop_delay')
})

t.test('with the checks off nothing is shed, whatever the heap', async (t) => {
  const app = await appWith(t, { maxHeapUsedBytes: 0, maxEventLoopDelayMs: 0 })
  // as many sample intervals as the test above needed at most
  for (let i = 0; i < 20; i++) {
    t.equal((await app.inject({ method: 'GET', url: '/v1/quota' })).statusCode, 401, `try ${i + 1}: answered by the route`)
    await sleep(10)
  }
})

t.test('the defaults: a second of median event-loop delay over five seconds, 90 % of the heap limit', async (t) => {
  t.equal(defaults.loadShedding.maxEventLoopDelayMs, 1000)
  t.equal(defaults.loadShedding.delayWindowMs, 5000)
  t.ok(defaults.loadShedding.maxHeapUsedBytes > 0)
  const config = loadConfig({ MAX_EVENT_LOOP_DELAY_MS: '250', MAX_HEAP_USED_BYTES: '0' })
  t.equal(config.loadShedding.maxEventLoopDelayMs, 250)
  t.equal(config.loadShedding.maxHeapUsedBytes, 0)
  t.throws(() => loadConfig({ MAX_HEAP_USED_BYTES: 'lots' }), /MAX_HEAP_USED_BYTES="lots" is invalid/)
})
