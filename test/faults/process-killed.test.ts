import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import { connect } from '../../db/connect.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { filesUnder } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// Fault: the process is killed (SIGKILL: no shutdown hook runs) in the middle of a batch,
// with some images stored, some half-written to their temporary files and some not yet
// answered by the origin. The next start must complete the row and leave no file behind.

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
      // MySQL waits for a stale heartbeat before it recovers a row (60 s by default); SQLite recovers at start
      RECOVERY_STALE_MS: '1000'
    }
    const first = await startServerProcess(env)
    servers.push(first)
    const token = await tokenFor(first)
    const key = `killed-${engine}`
    const fast = Array.from({ length: 6 }, (_, i) => origin.url(`/png/${i + 1}`))
    const stalled = Array.from({ length: 3 }, (_, i) => origin.url(`/stall?bytes=100&n=${i + 1}`))
    const held = Array.from({ length: 2 }, (_, i) => origin.url(`/held/${key}/png/${i + 1}`))
    origin.resetCounters()
    const dump = call(first, 'POST', '/v1/dumps', { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      JSON.stringify({ items: [{ name: 'stored', images: fast }, { name: 'half-written', images: stalled }, { name: 'not answered', images: held }] }))
    dump.catch(() => {}) // its connection dies with the process

    await origin.waitForRequests(11)
    const before = await storageUntil(storageDir, 'six stored images and three temporary files', (files) =>
      files.filter((f) => f.endsWith('.png')).length === 6 && files.filter((f) => f.endsWith('.part')).length === 3)
    const folder = before[0]!.split('/').slice(0, 2).join('/')
    const requestId = Number(folder.split('/')[1])
    t.comment(`killed with ${before.length} files in ${folder}: ${before.map((f) => f.split('/')[2]).join(' ')}`)

    first.child.kill('SIGKILL')
    t.equal(await first.exited, 'SIGKILL', 'the first process died without any shutdown')
    await t.rejects(dump, 'the client of the dump in flight sees its connection end')

    const second = await startServerProcess(env)
    servers.push(second)
    await second.waitForLog(/completed dumps interrupted/)

    const { db } = connect(database.url)
    const row = await db.selectFrom('requests').select(['status']).where('id', '=', requestId).executeTakeFirstOrThrow()
    await db.destroy()
    t.equal(Number(row.status), 1, 'the row is complete')

    const token2 = await tokenFor(second)
    const record = await call(second, 'GET', `/v1/dumps/${requestId}`, { authorization: `Bearer ${token2}` })
    t.equal(record.status, 200)
    t.equal(record.headers['x-dump-complete'], 'true')
    const result = JSON.parse(record.body)
    t.equal(result.status, 'FAILURE')
    const images = result.items.flatMap((item: { images: unknown[] }) => item.images)
    t.equal(images.length, 11)
    for (const image of images) {
      t.match(image, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' } }, `image ${image.imageId} is INTERRUPTED`)
    }
    t.same(await filesUnder(join(storageDir, folder)), [], 'no temporary and no orphan file is left in the request folder')
    t.same((await filesUnder(storageDir)).filter((f) => f.endsWith('.part')), [], 'no temporary file anywhere')

    t.equal((await call(second, 'GET', '/health')).status, 200, 'the restarted service is healthy')
    const again = await call(second, 'POST', '/v1/dumps', { authorization: `Bearer ${token2}`, 'content-type': 'application/json' },
      JSON.stringify({ items: [{ name: 'after', images: [origin.url('/png/42')] }] }))
    t.equal(again.status, 200, 'and serves dumps')
    t.equal(JSON.parse(again.body).status, 'SUCCESS')
  })
}
