import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { connect } from '../../db/connect.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { filesUnder } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// Fault: the process is killed (SIGKILL: no shutdown hook runs) in the middle of a batch,
// with some images stored and recorded, some half-written to their temporary files and
// some not yet answered by the origin. The next start resumes the dump: it keeps what was
// recorded, removes the temporary files, downloads the rest, and completes it; the
// origin's counts prove that nothing recorded was fetched twice.

const origin = await startOrigin()
const agent = new Agent({ connections: 16 })
t.teardown(async () => {
  await agent.close()
  await origin.close()
})

async function call (server: ServerProcess, method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: string) {
  const response = await request(`${server.baseUrl}${path}`, { method, headers, body, dispatcher: agent })
  return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
}

async function tokenFor (server: ServerProcess): Promise<string> {
  const { username, password } = sampleUsers.gold
  const response = await call(server, 'POST', '/v1/auth/token', { 'content-type': 'application/json' }, JSON.stringify({ username, passwordHash: sha256Hex(password) }))
  return JSON.parse(response.body).access_token
}

/** Polls the storage folder (which the service fills by itself) until `done` holds, with a deadline. */
async function storageUntil (dir: string, what: string, done: (files: string[]) => boolean): Promise<string[]> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const files = await filesUnder(dir)
    if (done(files)) return files
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; storage holds ${JSON.stringify(files)}`)
    await sleep(20)
  }
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: SIGKILL mid-batch, then a restart on the same database and storage`, async (t) => {
    const database = await createTestDatabase(engine)
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-killed-'))
    const servers: ServerProcess[] = []
    t.teardown(async () => {
      await Promise.all(servers.map((server) => server.stop('SIGKILL')))
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    const env = {
      DATABASE_URL: database.url,
      STORAGE_DIR: storageDir,
      ALLOW_PRIVATE_NETWORKS: 'true',
      DOWNLOAD_TIMEOUT_MS: '60000',
      // MySQL waits for a stale heartbeat before it resumes a row (60 s by default); SQLite
      // resumes at start. 2 s rather than the least, 1 s: a run stops when it cannot mark
      // itself alive for half of it, and a process starting on a loaded machine may stall
      RECOVERY_STALE_MS: '2000'
    }
    const first = await startServerProcess(env)
    servers.push(first)
    const token = await tokenFor(first)
    const key = `killed-${engine}`
    const fast = Array.from({ length: 6 }, (_, i) => `/png/${i + 1}`)
    // stalled mid-body the first time, past the first write batch (a temporary file is left),
    // whole when asked again
    const stalled = Array.from({ length: 3 }, (_, i) => `/stall-once/${key}-${i + 1}?bytes=140000&size=300000&n=${i + 7}`)
    const held = Array.from({ length: 2 }, (_, i) => `/held/${key}/png/${i + 10}`)
    origin.resetCounters()
    const dump = call(first, 'POST', '/v1/dumps', { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      JSON.stringify({ items: [{ name: 'stored', images: fast.map(origin.url) }, { name: 'half-written', images: stalled.map(origin.url) }, { name: 'not answered', images: held.map(origin.url) }] }))
    dump.catch(() => {}) // its connection dies with the process

    await origin.waitForRequests(11)
    const before = await storageUntil(storageDir, 'six stored images and three temporary files', (files) =>
      files.filter((f) => f.endsWith('.png')).length === 6 && files.filter((f) => f.endsWith('.part')).length === 3)
    const folder = before[0]!.split('/').slice(0, 2).join('/')
    const requestId = Number(folder.split('/')[1])
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    const recorded = async () => await db.selectFrom('dump_images').select(['image_id', 'status']).where('request_id', '=', requestId).orderBy('image_id').execute()
    // the six outcomes are recorded within the recording delay (250 ms)
    for (const deadline = Date.now() + 20_000; (await recorded()).length < 6;) {
      if (Date.now() > deadline) throw new Error(`the six outcomes were not recorded: ${JSON.stringify(await recorded())}`)
      await sleep(20)
    }
    t.same((await recorded()).map((r) => [r.image_id, r.status]), [1, 2, 3, 4, 5, 6].map((n) => [n, 'SUCCESS']), 'six outcomes recorded before the kill')
    t.comment(`killed with ${before.length} files in ${folder}: ${before.map((f) => f.split('/')[2]).join(' ')}`)

    first.child.kill('SIGKILL')
    t.equal(await first.exited, 'SIGKILL', 'the first process died without any shutdown')
    await t.rejects(dump, 'the client of the dump in flight sees its connection end')
    // the held images answer at once from now on (the killed process's requests died with it)
    origin.release(key)

    const second = await startServerProcess(env)
    servers.push(second)
    await second.waitForLog(/resumed dump completed/)

    const row = await db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', requestId).executeTakeFirstOrThrow()
    t.equal(Number(row.status), 1, 'the row is complete')
    // once, unless the loaded machine stalled the new process past its lease and a second
    // resumption finished the job: either way the counts below must hold
    t.ok(row.resumes >= 1, `after ${row.resumes} resumption(s)`)

    const token2 = await tokenFor(second)
    const record = await call(second, 'GET', `/v1/dumps/${requestId}`, { authorization: `Bearer ${token2}` })
    t.equal(record.status, 200)
    t.equal(record.headers['x-dump-complete'], 'true')
    const result = JSON.parse(record.body)
    t.equal(result.status, 'SUCCESS', 'the dump completed normally')
    const images = result.items.flatMap((item: { images: unknown[] }) => item.images) as Array<{ imageId: number, status: string, sha256: string }>
    t.same(images.map((image) => [image.imageId, image.status]), Array.from({ length: 11 }, (_, i) => [i + 1, 'SUCCESS']), 'every image succeeded')

    for (const path of fast) t.equal(origin.paths.filter((p) => p === path).length, 1, `${path}: recorded before the kill, fetched once`)
    for (const path of [...stalled, ...held]) t.ok(origin.paths.filter((p) => p === path).length >= 2, `${path}: pending at the kill, fetched again`)

    t.same(await filesUnder(join(storageDir, folder)), images.map((image) => `${image.imageId}.png`).sort(), 'the request folder holds the eleven images and nothing else')
    for (const image of images) {
      const bytes = await readFile(join(storageDir, folder, `${image.imageId}.png`))
      t.equal(createHash('sha256').update(bytes).digest('hex'), image.sha256, `image ${image.imageId}'s file is the one its record describes`)
    }
    t.same((await filesUnder(storageDir)).filter((f) => f.endsWith('.part')), [], 'no temporary file anywhere')

    t.equal((await call(second, 'GET', '/health')).status, 200, 'the restarted service is healthy')
    const again = await call(second, 'POST', '/v1/dumps', { authorization: `Bearer ${token2}`, 'content-type': 'application/json' },
      JSON.stringify({ items: [{ name: 'after', images: [origin.url('/png/42')] }] }))
    t.equal(again.status, 200, 'and serves dumps')
    t.equal(JSON.parse(again.body).status, 'SUCCESS')
  })
}
