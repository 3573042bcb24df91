import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { connect } from '../../db/connect.js'
import { workerInstance } from '../../lib/instance.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { until } from '../helpers/until.js'
import { parsed, startServerProcess, workerPids, type LogLine, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// WORKERS=2: the real service as `npm start` runs it on a two-core machine, a supervisor and
// two worker processes sharing one port, on each engine. The quota holds across the workers;
// a worker killed in the middle of a dump is replaced and its dump resumed by the other at
// once, by name (RECOVERY_STALE_MS stays at its 60 s: no heartbeat goes stale in this test),
// without touching the other worker's dump; SIGTERM stops them all gracefully.

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: WORKERS=2`, async (t) => {
    const database = await createTestDatabase(engine)
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-workers-'))
    // one connection per request: node:cluster hands each new connection to the next worker
    const fresh = new Agent({ pipelining: 0, connections: 200 })
    const servers: ServerProcess[] = []
    t.teardown(async () => {
      await Promise.all(servers.map((server) => server.stop('SIGKILL')))
      await fresh.close()
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    const server = await startServerProcess({ DATABASE_URL: database.url, STORAGE_DIR: storageDir, ALLOW_PRIVATE_NETWORKS: 'true', WORKERS: '2', DOWNLOAD_TIMEOUT_MS: '60000' })
    servers.push(server)
    await server.waitForLog(/"msg":"all workers listening"/)
    const primary = server.child.pid!
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())

    const call = async (method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: string) => {
      const response = await request(`${server.baseUrl}${path}`, { method, headers: { ...headers, connection: 'close' }, body, dispatcher: fresh })
      return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
    }
    const tokenOf = async (user: { username: string, password: string }) => JSON.parse((await call('POST', '/v1/auth/token', { 'content-type': 'application/json' },
      JSON.stringify({ username: user.username, passwordHash: sha256Hex(user.password) }))).body).access_token as string
    const dumpBody = (names: string[]) => JSON.stringify({ items: [{ name: 'x', images: names.map(origin.url) }] })

    t.test('60 concurrent dumps from a bronze user (25 an hour) over both workers admit exactly 25', async (t) => {
      const headers = { authorization: `Bearer ${await tokenOf(sampleUsers.bronze)}`, 'content-type': 'application/json' }
      const responses = await Promise.all(Array.from({ length: 60 }, () => call('POST', '/v1/dumps', headers, dumpBody(['/png/1']))))
      t.equal(responses.filter((r) => r.status === 200).length, 25, 'admitted')
      t.equal(responses.filter((r) => r.status === 429).length, 35, 'refused')
      const rows = await db.selectFrom('requests').innerJoin('users', 'users.userid', 'requests.userid')
        .select((eb) => eb.fn.countAll<number>().as('n')).where('users.username', '=', sampleUsers.bronze.username).executeTakeFirstOrThrow()
      t.equal(Number(rows.n), 25, 'exactly 25 log rows')
      // which worker decided each: its request log, by the request's id within the worker
      // (a line is printed after its answer is sent: the last ones may still be on their way)
      const decisions = () => {
        const lines = parsed(server)
        const posts = new Set(lines.filter((l) => l.msg === 'incoming request' && (l.req as { method: string, url: string }).method === 'POST' && (l.req as { url: string }).url === '/v1/dumps').map((l) => `${l.pid}/${String(l.reqId)}`))
        return lines.filter((l) => l.msg === 'request completed' && posts.has(`${l.pid}/${String(l.reqId)}`))
      }
      const decided = await until('the 60 decisions in the workers\' logs', async () => decisions(), (d) => d.length === 60)
      const byWorker = [...workerPids(server).values()].map((pid) => decided.filter((l) => l.pid === pid))
      t.ok(byWorker.every((d) => d.length > 0), `both workers decided admissions (${byWorker.map((d) => d.length).join(' and ')} of 60)`)
      t.comment(`admitted per worker: ${byWorker.map((d) => d.filter((l) => (l.res as { statusCode: number }).statusCode === 200).length).join(', ')}`)
    })

    t.test('a worker killed mid-dump: its dump is resumed by the other at once, whose own dump goes on untouched, and a new worker starts', async (t) => {
      const headers = { authorization: `Bearer ${await tokenOf(sampleUsers.gold)}`, 'content-type': 'application/json', prefer: 'respond-async' }
      origin.resetCounters()
      // dumps until two run on different workers; each holds two images open at the origin
      const dumps: Array<{ id: number, worker: number, key: string }> = []
      const pids = workerPids(server)
      for (let n = 0; dumps.length < 2; n++) {
        if (n === 6) throw new Error(`six dumps in a row went to one worker: ${JSON.stringify(dumps)}`)
        const key = `workers-${engine}-${n}`
        const accepted = await call('POST', '/v1/dumps', headers, dumpBody([`/png/${10 * n + 1}`, `/png/${10 * n + 2}`, `/png/${10 * n + 3}`, `/held/${key}/png/${10 * n + 4}`, `/held/${key}/png/${10 * n + 5}`]))
        t.equal(accepted.status, 202)
        const id = Number(JSON.parse(accepted.body).requestId)
        const row = await db.selectFrom('requests').select('run_by').where('id', '=', id).executeTakeFirstOrThrow()
        const worker = [...pids.keys()].find((w) => row.run_by === workerInstance(primary, w))
        if (worker === undefined) throw new Error(`dump ${id} names ${String(row.run_by)}, no worker of ${primary}`)
        if (dumps.every((d) => d.worker !== worker)) dumps.push({ id, worker, key })
        else origin.release(key) // a third dump on a worker already used: let it finish
      }
      const [victim, survivor] = dumps as [typeof dumps[0], typeof dumps[0]]
      const recorded = async (id: number) => (await db.selectFrom('dump_images').select('image_id').where('request_id', '=', id).execute()).length
      // both mid-way: three outcomes recorded, two downloads held open by the origin
      for (const dump of dumps) await until(`three outcomes of dump ${dump.id}`, () => recorded(dump.id), (n) => n === 3)
      await until('the held downloads', async () => origin.paths.filter((p) => p.startsWith('/held/')), (held) => dumps.every((d) => held.filter((p) => p.startsWith(`/held/${d.key}/`)).length === 2))

      const victimPid = pids.get(victim.worker)!
      process.kill(victimPid, 'SIGKILL')
      await server.waitForLog(new RegExp(`"workerPid":${victimPid},"code":null,"signal":"SIGKILL".*"msg":"worker died`))
      origin.release(victim.key)
      const resumed = JSON.parse(await server.waitForLog(new RegExp(`"requestId":${victim.id},.*"msg":"resumed dump completed"`))) as LogLine
      t.equal(resumed.pid, pids.get(survivor.worker), 'the live worker resumed the dead one\'s dump')

      const victimRow = await db.selectFrom('requests').select(['status', 'resumes', 'outcome', 'run_by']).where('id', '=', victim.id).executeTakeFirstOrThrow()
      t.same([Number(victimRow.status), victimRow.resumes, victimRow.outcome], [1, 1, 'SUCCESS'], 'the killed worker\'s dump completed after one resumption')
      t.equal(victimRow.run_by, workerInstance(primary, survivor.worker), 'run by the live worker since')
      // the next worker the supervisor forks has the next id; it swept for left-behind dumps as it started
      const next = Math.max(...pids.keys()) + 1
      const replacement = JSON.parse(await server.waitForLog(new RegExp(`"worker":${next},"workerPid":\\d+,"msg":"worker listening"`))) as LogLine
      t.not(Number(replacement.workerPid), victimPid, `a new worker (pid ${String(replacement.workerPid)}) took the dead one's place`)
      const survivorRow = await db.selectFrom('requests').select(['status', 'resumes', 'run_by']).where('id', '=', survivor.id).executeTakeFirstOrThrow()
      t.same([Number(survivorRow.status), survivorRow.resumes, survivorRow.run_by], [0, 0, workerInstance(primary, survivor.worker)], 'the live worker\'s own dump still runs, taken over neither by the resumption nor by the new worker\'s start')

      origin.release(survivor.key)
      await until(`dump ${survivor.id} to complete`, async () => (await db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', survivor.id).executeTakeFirstOrThrow()), (row) => Number(row.status) === 1)
      t.equal((await db.selectFrom('requests').select('resumes').where('id', '=', survivor.id).executeTakeFirstOrThrow()).resumes, 0, 'completed by its first run')
      const fetches = (path: string) => origin.paths.filter((p) => p === path).length
      const n = (dump: typeof victim) => Number(dump.key.split('-').at(-1))
      for (const dump of dumps) {
        for (const image of [1, 2, 3]) t.equal(fetches(`/png/${10 * n(dump) + image}`), 1, `dump ${dump.id}: image ${image}, recorded before the kill, fetched once`)
      }
      for (const image of [4, 5]) {
        t.equal(fetches(`/held/${victim.key}/png/${10 * n(victim) + image}`), 2, `the killed worker's pending image ${image} was fetched again`)
        t.equal(fetches(`/held/${survivor.key}/png/${10 * n(survivor) + image}`), 1, `the live worker's image ${image} was fetched once`)
      }

      t.equal((await call('GET', '/health')).status, 200)
    })

    t.test('SIGTERM to the supervisor: the dump in flight is answered, every worker stops, exit 0', async (t) => {
      const headers = { authorization: `Bearer ${await tokenOf(sampleUsers.silver)}`, 'content-type': 'application/json' }
      origin.resetCounters()
      const dump = call('POST', '/v1/dumps', headers, dumpBody(Array.from({ length: 4 }, (_, i) => `/delay/300/png/${i + 100}`)))
      await origin.waitForRequests(4)
      server.child.kill('SIGTERM')
      const answer = await dump
      t.equal(answer.status, 200, 'the dump in flight is answered')
      t.equal(JSON.parse(answer.body).status, 'SUCCESS', 'with every image downloaded')
      t.equal(await server.exited, 0, 'the supervisor exits 0')
      const stopped = parsed(server).filter((l) => l.msg === 'worker stopped')
      t.equal(stopped.length, 2, 'after both workers stopped')
      t.ok(stopped.every((l) => l.code === 0 && l.signal === null), 'each by itself, with 0')
    })
  })
}
