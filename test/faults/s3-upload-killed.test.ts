import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent, request } from 'undici'
import { connect } from '../../db/connect.js'
import { sha256Hex } from '../../lib/password.js'
import { createS3Store, MIN_PART_SIZE } from '../../lib/object-store/s3-store.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { filesUnder } from '../helpers/dumps.js'
import { makePng } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'
import { startS3Server, type S3Request } from '../helpers/s3-server.js'
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// Fault: the service process is killed (SIGKILL: no shutdown hook runs) while a large image
// is going up to S3 in parts, with part 1 stored and the rest of the body not yet sent by
// the origin. No object is visible under the image's key (an unfinished multipart upload
// is not an object); the next start on the same database and bucket resumes the dump,
// keeps the small image recorded before the kill, uploads the large one again whole, and
// leaves in the bucket exactly the objects the recorded successes point at.

const s3 = await startS3Server()
t.teardown(() => s3.close())
const origin = await startOrigin()
const agent = new Agent({ connections: 4 })
t.teardown(async () => {
  await agent.close()
  await origin.close()
})

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

async function call (server: ServerProcess, method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: string) {
  const response = await request(`${server.baseUrl}${path}`, { method, headers, body, dispatcher: agent })
  return { status: response.statusCode, headers: response.headers, body: Buffer.from(await response.body.arrayBuffer()) }
}

async function tokenFor (server: ServerProcess): Promise<string> {
  const { username, password } = sampleUsers.gold
  const response = await call(server, 'POST', '/v1/auth/token', { 'content-type': 'application/json' }, JSON.stringify({ username, passwordHash: sha256Hex(password) }))
  return JSON.parse(response.body.toString()).access_token
}

const BIG = 12 * 1024 * 1024
// the origin sends this much of the big image at once and holds the rest: more than one
// part, so part 1 goes up, and the upload cannot finish before the kill
const FIRST = MIN_PART_SIZE + 1024 * 1024

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: SIGKILL during a multipart upload, then a restart on the same database and bucket`, async (t) => {
    const database = await createTestDatabase(engine)
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-s3-killed-'))
    const prefix = `killed-${engine}-${process.pid}`
    const store = createS3Store({ ...s3.storeOptions, prefix })
    const servers: ServerProcess[] = []
    t.teardown(async () => {
      await Promise.all(servers.map((server) => server.stop('SIGKILL')))
      await store.close()
      await database.drop()
      await rm(storageDir, { recursive: true, force: true })
    })
    const objects = async (): Promise<string[]> => {
      const keys: string[] = []
      for await (const key of store.list('')) keys.push(key)
      return keys.sort()
    }
    const env = {
      DATABASE_URL: database.url,
      STORAGE_DIR: storageDir,
      STORAGE_URL: s3.url(prefix),
      // the SDK's default credential chain, as in production
      ...s3.env,
      ALLOW_PRIVATE_NETWORKS: 'true',
      DOWNLOAD_TIMEOUT_MS: '60000',
      // MySQL waits for a stale heartbeat before it resumes a row (60 s by default); SQLite
      // resumes at start. 2 s: see process-killed.test.ts
      RECOVERY_STALE_MS: '2000'
    }

    const hold = `s3-killed-${engine}-${process.pid}`
    const smallPath = `/png/902?${hold}`
    const bigPath = `/held-body/${hold}?bytes=${BIG}&first=${FIRST}&n=901`
    const small = makePng(902)
    const big = makePng(901, { bytes: BIG })

    const first = await startServerProcess(env)
    servers.push(first)
    const token = await tokenFor(first)
    origin.resetCounters()

    // s3rver has stored part 1 of an upload under this test's prefix and answered it
    const bucketPrefix = `/${s3.bucket}/${prefix}/`
    const partStored = new Promise<S3Request>((resolve) => {
      const onRequest = (r: S3Request): void => {
        if (r.method === 'PUT' && r.path.startsWith(bucketPrefix) && r.query.get('partNumber') === '1' && r.status === 200) {
          s3.events.off('request', onRequest)
          resolve(r)
        }
      }
      s3.events.on('request', onRequest)
    })
    const dump = call(first, 'POST', '/v1/dumps', { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      JSON.stringify({ items: [{ name: 'small', images: [origin.url(smallPath)] }, { name: 'big', images: [origin.url(bigPath)] }] }))
    dump.catch(() => {}) // its connection dies with the process
    const part = await Promise.race([partStored, first.exited.then((code) => { throw new Error(`the service exited (${String(code)}) before part 1 was stored:\n${first.logs.join('\n')}`) })])
    const bigKey = decodeURIComponent(part.path.slice(bucketPrefix.length))
    t.equal(part.contentLength, MIN_PART_SIZE, `part 1 of ${bigKey} stored: ${MIN_PART_SIZE} bytes`)

    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    const { id: requestId } = await db.selectFrom('requests').select('id').executeTakeFirstOrThrow()
    t.match(bigKey, new RegExp(`^\\d+/${requestId}/2\\.png$`), 'the upload is the big image\'s, in its dump\'s folder')
    const recorded = async () => await db.selectFrom('dump_images').select(['image_id', 'status', 'object_key']).where('request_id', '=', requestId).orderBy('image_id').execute()
    // the small image's outcome is recorded within the recording delay (250 ms); the big
    // one cannot finish while the origin holds its body
    for (const deadline = Date.now() + 20_000; (await recorded()).length < 1;) {
      if (Date.now() > deadline) throw new Error('the small image\'s outcome was not recorded')
      await sleep(20)
    }
    const before = await recorded()
    t.same(before.map((r) => [r.image_id, r.status]), [[1, 'SUCCESS']], 'the small image recorded before the kill, the big one not')
    const smallKey = before[0]!.object_key!

    first.child.kill('SIGKILL')
    t.equal(await first.exited, 'SIGKILL', 'the first process died without any shutdown')
    await t.rejects(dump, 'the client of the dump in flight sees its connection end')

    t.equal(await store.stat(bigKey), undefined, 'no object under the big image\'s key')
    t.equal(await store.read(bigKey), undefined, 'nothing to read there')
    t.same(await objects(), [smallKey], 'the bucket lists only the small image\'s object')
    const unfinished = (await s3.unfinishedUploads()).filter((u) => u.key === `${prefix}/${bigKey}`)
    t.ok(unfinished.length === 1 && unfinished[0]!.parts >= 1, 'the big image\'s parts sit in an unfinished upload, not an object')

    // the origin sends the whole big image from now on
    origin.release(hold)
    const second = await startServerProcess(env)
    servers.push(second)
    await second.waitForLog(/resumed dump completed/)

    const row = await db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', requestId).executeTakeFirstOrThrow()
    t.equal(Number(row.status), 1, 'the row is complete')
    // once, unless a loaded machine stalled the new process past its lease
    t.ok(row.resumes >= 1, `after ${row.resumes} resumption(s)`)

    const token2 = await tokenFor(second)
    const auth = { authorization: `Bearer ${token2}` }
    const record = await call(second, 'GET', `/v1/dumps/${requestId}`, auth)
    t.equal(record.status, 200)
    const result = JSON.parse(record.body.toString())
    t.equal(result.status, 'SUCCESS', 'the dump completed normally')
    const images = result.items.flatMap((item: { images: unknown[] }) => item.images) as Array<{ imageId: number, status: string, sha256: string, bytes: number, location: string }>
    t.same(images.map((image) => [image.imageId, image.status]), [[1, 'SUCCESS'], [2, 'SUCCESS']], 'both images succeeded')
    t.match(images[1], { bytes: BIG, sha256: sha256(big) }, 'the big image\'s record describes the origin\'s bytes')

    t.equal(origin.paths.filter((p) => p === smallPath).length, 1, 'the small image, recorded before the kill, was kept, not fetched again')
    t.equal(origin.paths.filter((p) => p === bigPath).length, 2, 'the big image was fetched again')

    for (const [image, bytes] of [[images[0]!, small], [images[1]!, big]] as const) {
      const served = await call(second, 'GET', image.location, auth)
      t.equal(served.status, 200, `image ${image.imageId} is served`)
      t.equal(served.body.length, bytes.length)
      t.equal(sha256(served.body), sha256(bytes), `image ${image.imageId}: identical bytes`)
    }

    const after = await recorded()
    const pointedAt = [...new Set(after.filter((r) => r.status === 'SUCCESS').map((r) => r.object_key!))].sort()
    t.equal(pointedAt.length, 2, 'two successes, two keys')
    t.ok(pointedAt.includes(smallKey), 'the small image still points at the object stored before the kill')
    t.same(await objects(), pointedAt, 'the bucket holds exactly the objects the successes point at')
    t.same(await filesUnder(storageDir), [], 'nothing written under STORAGE_DIR')
  })
}
