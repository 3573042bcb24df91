import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { connect } from '../../db/connect.js'
import { workerInstance } from '../../lib/instance.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { parseMetrics, series, type Scrape } from '../helpers/metrics.js'
import { startOrigin } from '../helpers/origin.js'
import { until } from '../helpers/until.js'
import { parsed, startServerProcess, workerPids, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// WORKERS=2: GET /metrics, whichever worker the connection lands on, answers with the whole
// service's counts, gathered by the supervisor from both workers (prom-client's
// AggregatorRegistry): counters and the running dumps add up over the workers. A worker that
// cannot answer (SIGSTOP) fails the scrape with 503 within the gathering's timeout rather
// than hang it or answer with part of the service; once it runs again, scrapes are whole.

const origin = await startOrigin()
t.teardown(() => origin.close())

/** The pids of the workers that logged taking GET /metrics, one per scrape, in order. */
function scrapedBy (server: ServerProcess): number[] {
  return parsed(server).filter((l) => l.msg === 'incoming request' && (l.req as { url: string }).url === '/metrics').map((l) => l.pid)
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: WORKERS=2, GET /metrics`, async (t) => {
    const database = await createTestDatabase(engine)
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-cluster-metrics-'))
    // one connection per request: node:cluster hands each new connection to the next worker
    const fresh = new Agent({ pipelining: 0, connections: 50 })
    const servers: ServerProcess[] = []
    const stopped = new Set<number>()
    // the keys of the downloads the origin holds open, released at the end
    const keys: string[] = []
    t.teardown(async () => {
      for (const pid of stopped) process.kill(pid, 'SIGCONT')
      for (const key of keys) origin.release(key)
      await Promise.all(servers.map((server) => server.stop('SIGKILL')))
      await fresh.close()
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    const server = await startServerProcess({ DATABASE_URL: database.url, STORAGE_DIR: storageDir, ALLOW_PRIVATE_NETWORKS: 'true', WORKERS: '2' })
    servers.push(server)
    await server.waitForLog(/"msg":"all workers listening"/)
    const primary = server.child.pid!
    const pids = workerPids(server)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())

    const call = async (method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: string, signal?: AbortSignal) => {
      const response = await request(`${server.baseUrl}${path}`, { method, headers: { ...headers, connection: 'close' }, body, dispatcher: fresh, signal })
      return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
    }
    const login = async (user: { username: string, password: string }) => await call('POST', '/v1/auth/token', { 'content-type': 'application/json' },
      JSON.stringify({ username: user.username, passwordHash: sha256Hex(user.password) }))
    const dumpBody = (urls: string[]) => JSON.stringify({ items: [{ name: 'x', images: urls }] })
    const scrape = async (): Promise<Scrape> => {
      const answer = await call('GET', '/metrics')
      if (answer.status !== 200) throw new Error(`GET /metrics: ${answer.status} ${answer.body}`)
      return parseMetrics(answer.body)
    }
    /** The worker (cluster id) that runs or ran dump `id`, from its record. */
    const runnerOf = async (id: number): Promise<number> => {
      const row = await db.selectFrom('requests').select('run_by').where('id', '=', id).executeTakeFirstOrThrow()
      const worker = [...pids.keys()].find((w) => row.run_by === workerInstance(primary, w))
      if (worker === undefined) throw new Error(`dump ${id} names ${String(row.run_by)}, no worker of ${primary}`)
      return worker
    }

    t.test('every scrape, whichever worker answers it, counts what both workers did', async (t) => {
      // one after the other: a login replaces the user's previous token
      const logins = []
      for (const user of [sampleUsers.silver, sampleUsers.bronze, sampleUsers.gold, { username: sampleUsers.silver.username, password: 'not his password' }, sampleUsers.gold]) logins.push(await login(user))
      t.same(logins.map((l) => l.status), [200, 200, 200, 401, 200])
      const token = JSON.parse(logins[4]!.body).access_token as string
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
      // six dumps of one image each, one after the other, each on a connection of its own
      const runners: number[] = []
      for (let n = 1; n <= 6; n++) {
        const dump = await call('POST', '/v1/dumps', headers, dumpBody([origin.url(`/png/${n}?bytes=1000`)]))
        t.equal(dump.status, 200, dump.body.slice(0, 200))
        runners.push(await runnerOf(Number(JSON.parse(dump.body).requestId)))
      }
      t.ok([...pids.keys()].every((w) => runners.includes(w)), `both workers ran dumps (workers ${runners.join(', ')})`)

      const whole = {
        [series('image_dump_dumps_total', { status: 'SUCCESS' })]: 6,
        [series('image_dump_images_total', { outcome: 'SUCCESS', error_code: '' })]: 6,
        image_dump_stored_bytes_total: 6000,
        [series('image_dump_download_duration_seconds_count', { outcome: 'SUCCESS' })]: 6,
        [series('image_dump_download_duration_seconds_bucket', { outcome: 'SUCCESS', le: '+Inf' })]: 6,
        [series('image_dump_logins_total', { outcome: 'success' })]: 4,
        [series('image_dump_logins_total', { outcome: 'refused' })]: 1,
        [series('image_dump_http_request_duration_seconds_count', { method: 'POST', route: '/v1/dumps', status_code: '200' })]: 6,
        image_dump_dumps_running: 0
      }
      const scrapes = 6
      for (let n = 1; n <= scrapes; n++) {
        const scraped = await scrape()
        t.same(Object.fromEntries(Object.keys(whole).map((key) => [key, scraped.get(key)])), whole, `scrape ${n}: the whole service's counts`)
        // one sample per series, however many workers: the gauges of each process merged too
        t.same(['50', '99', '100'].map((p) => scraped.has(series('image_dump_event_loop_delay_seconds', { percentile: p }))), [true, true, true], `scrape ${n}: one event-loop delay per percentile`)
        t.ok((scraped.get('image_dump_resident_memory_bytes') ?? 0) > (scraped.get('image_dump_heap_used_bytes') ?? Infinity), `scrape ${n}: the workers' resident memory (their total) above the largest heap`)
      }
      const answeredBy = await until(`the ${scrapes} scrapes in the workers' logs`, async () => scrapedBy(server), (by) => by.length === scrapes)
      t.ok([...pids.values()].every((pid) => answeredBy.includes(pid)), `both workers answered scrapes (pids ${answeredBy.join(', ')})`)
    })

    t.test('the running dumps add up over the workers', async (t) => {
      const token = JSON.parse((await login(sampleUsers.gold)).body).access_token as string
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json', prefer: 'respond-async' }
      origin.resetCounters()
      // dumps until one runs on each worker, each holding its one download open at the origin
      // (they all stay running until the end)
      const runners: number[] = []
      for (let n = 0; ![...pids.keys()].every((w) => runners.includes(w)); n++) {
        if (n === 6) throw new Error(`six dumps in a row went to one worker: ${runners.join(', ')}`)
        const key = `metrics-${engine}-${n}`
        keys.push(key)
        const accepted = await call('POST', '/v1/dumps', headers, dumpBody([origin.url(`/held/${key}/png/${n + 20}`)]))
        t.equal(accepted.status, 202)
        runners.push(await runnerOf(Number(JSON.parse(accepted.body).requestId)))
      }
      await until('the held downloads', async () => origin.paths.filter((p) => p.startsWith('/held/')), (paths) => keys.every((key) => paths.some((p) => p.startsWith(`/held/${key}/`))))
      for (let n = 1; n <= 4; n++) t.equal((await scrape()).get('image_dump_dumps_running'), keys.length, `scrape ${n}: the ${keys.length} dumps running on workers ${runners.join(', ')}, in all`)
    })

    t.test('a worker that cannot answer fails the scrape with 503 in time; once it runs again, scrapes are whole', async (t) => {
      const [stuck] = [...pids.values()]
      process.kill(stuck!, 'SIGSTOP')
      stopped.add(stuck!)
      // node:cluster hands the stopped worker one connection at most (it is never ready for
      // the next): of two scrapes at once, at least one lands on the live worker
      const giveUp = new AbortController()
      const started = performance.now()
      const answers = [0, 1].map(async () => await call('GET', '/metrics', {}, undefined, giveUp.signal))
      const first = await Promise.any(answers)
      const waited = performance.now() - started
      giveUp.abort()
      await Promise.allSettled(answers)
      t.equal(first.status, 503, first.body)
      t.match(JSON.parse(first.body), { message: /metrics of every worker could not be gathered/ }, 'says why, in the service\'s error format')
      t.ok(waited < 8_000, `answered in ${Math.round(waited)} ms, within Prometheus' default 10 s scrape timeout`)

      process.kill(stuck!, 'SIGCONT')
      stopped.delete(stuck!)
      const scraped = await scrape()
      t.same([scraped.get(series('image_dump_dumps_total', { status: 'SUCCESS' })), scraped.get('image_dump_dumps_running')], [6, keys.length],
        'whole again: the six dumps done and those running, of both workers')
    })
  })
}
