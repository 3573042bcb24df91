/**
 * The whole service on object storage: STORAGE_URL=s3://… against s3rver, a local stand-in
 * for AWS S3, MinIO or Ceph RGW (test/helpers/s3-server.ts), with a real origin on
 * loopback. Dumps store their successes as objects in the bucket and nothing on disk; the
 * image route serves them (bytes, ETag, ranges); identical bytes are one object; DELETE
 * removes what only its dump had; a large image goes up in parts; a dump cut off by a
 * close is resumed by a new instance on the same database and bucket; and instances that
 * share a database and a bucket serve each other's images.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { buildTestApp, login, sampleUsers, type TestApp } from '../helpers/app.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { filesUnder, postDump, storedKeyOf, storedKeys } from '../helpers/dumps.js'
import { makeJpeg, makePng } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'
import { startS3Server } from '../helpers/s3-server.js'
import { MIN_PART_SIZE, createS3Store } from '../../lib/object-store/s3-store.js'

const s3 = await startS3Server()
t.teardown(() => s3.close())
const origin = await startOrigin()
t.teardown(() => origin.close())

// the service's store takes its credentials from the SDK's default chain, as in production
const saved = Object.fromEntries(Object.keys(s3.env).map((name) => [name, process.env[name]]))
Object.assign(process.env, s3.env)
t.teardown(() => {
  for (const [name, value] of Object.entries(saved)) {
    if (value === undefined) delete process.env[name]
    else process.env[name] = value
  }
})

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

// each test has a prefix of its own in the one bucket, so that what it lists is its own
let prefixes = 0
function bucketArea (t: Test): { prefix: string, url: string, objects: () => Promise<string[]>, put: (key: string, bytes: Buffer) => Promise<void> } {
  const prefix = `e2e-${process.pid}-${++prefixes}`
  const store = createS3Store({ ...s3.storeOptions, prefix })
  t.teardown(() => store.close())
  return {
    prefix,
    url: s3.url(prefix),
    /** every complete object under the prefix, by its key below it */
    objects: async () => {
      const keys: string[] = []
      for await (const key of store.list('')) keys.push(key)
      return keys.sort()
    },
    put: async (key, bytes) => {
      const sink = await store.create(key, { contentType: 'image/png' })
      await sink.write([bytes], bytes.length)
      await sink.commit()
    }
  }
}

async function gold (app: TestApp['app']): Promise<{ auth: Record<string, string>, token: string, userid: number }> {
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
  const { userid } = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
  return { auth: { authorization: `Bearer ${token}` }, token, userid }
}

interface Answer { requestId: number, status: string, items: Array<{ images: Array<{ imageId: number, status: string, location?: string, sha256?: string, bytes?: number }> }> }
const imagesOf = (answer: Answer) => answer.items.flatMap((item) => item.images)

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: dumps on S3 storage`, async (t) => {
    const area = bucketArea(t)
    const { app, storageDir } = await buildTestApp(t, engine, { STORAGE_URL: area.url })
    const { auth, token, userid } = await gold(app)
    const get = async (url: string, headers: Record<string, string> = {}) => await app.inject({ method: 'GET', url, headers: { ...auth, ...headers } })
    const png = makePng(801, { bytes: 3000 })
    const jpeg = makeJpeg(802)

    const first = (await postDump(app, token, 'json', [
      { name: 'Ok', images: [origin.url('/png/801?bytes=3000'), origin.url('/jpeg/802')] },
      { name: 'Broken', images: [origin.url('/status/404?s3'), origin.url('/html?s3')] }
    ])).json() as Answer

    t.test('a dump with successes and failures: each success served from the bucket, byte for byte', async (t) => {
      t.equal(first.status, 'PARTIAL')
      t.same(imagesOf(first).map((image) => image.status), ['SUCCESS', 'SUCCESS', 'FAILURE', 'FAILURE'])
      for (const [image, bytes] of [[imagesOf(first)[0]!, png], [imagesOf(first)[1]!, jpeg]] as const) {
        const full = await get(image.location!)
        t.equal(full.statusCode, 200, `image ${image.imageId}`)
        t.ok(full.rawPayload.equals(bytes), 'the bytes the origin sent')
        t.equal(full.headers.etag, `"${sha256(bytes)}"`, 'a strong ETag, the SHA-256')
        t.equal(full.headers['content-length'], String(bytes.length))
        t.equal((await get(image.location!, { 'if-none-match': `"${sha256(bytes)}"` })).statusCode, 304, 'and 304 for it')
        const range = await get(image.location!, { range: 'bytes=10-29' })
        t.equal(range.statusCode, 206, 'a range')
        t.equal(range.headers['content-range'], `bytes 10-29/${bytes.length}`)
        t.ok(range.rawPayload.equals(bytes.subarray(10, 30)), 'of exactly those bytes')
      }
      for (const n of [3, 4]) t.equal((await get(`/v1/dumps/${first.requestId}/images/${n}`)).statusCode, 404, `failed image ${n}: 404`)
    })

    t.test('the bucket holds one object per success and nothing else; the disk holds nothing', async (t) => {
      const keys = await storedKeys(app, first.requestId)
      t.equal(keys.length, 2, 'two successes, two keys')
      t.same(await area.objects(), keys, 'exactly the objects the successes point at')
      t.ok(keys.every((key) => key.startsWith(`${userid}/${first.requestId}/`)), 'under the dump\'s folder')
      t.same(await filesUnder(storageDir), [], 'nothing written under STORAGE_DIR')
    })

    t.test('identical bytes in two dumps are one object; DELETE removes only the unshared one', async (t) => {
      const second = (await postDump(app, token, 'json', [{ name: 'Again', images: [origin.url('/png/801?bytes=3000&again')] }])).json() as Answer
      t.equal(second.status, 'SUCCESS')
      const before = await area.objects()
      t.same(before, await storedKeys(app, first.requestId), 'no new object: the second dump points at the first one\'s')
      t.equal(await storedKeyOf(app, second.requestId, 1), await storedKeyOf(app, first.requestId, 1))
      const jpegKey = (await storedKeyOf(app, first.requestId, 2))!

      t.equal((await app.inject({ method: 'DELETE', url: `/v1/dumps/${first.requestId}`, headers: auth })).statusCode, 204)
      t.same(await area.objects(), before.filter((key) => key !== jpegKey), 'the object only the deleted dump had is gone from the bucket; the shared one stays')
      const kept = await get(imagesOf(second)[0]!.location!)
      t.equal(kept.statusCode, 200, 'the other dump still serves its image')
      t.ok(kept.rawPayload.equals(png))
      t.equal((await app.inject({ method: 'DELETE', url: `/v1/dumps/${second.requestId}`, headers: auth })).statusCode, 204)
      t.same(await area.objects(), [], 'deleting the last dump that has it removes the shared object')
    })

    t.test('rows from before keys were recorded find their object in the bucket by probing its names', async (t) => {
      const id = (await app.quota.admit(userid, 1000, { dataformat: 'json', data: Buffer.from('{}') })).requestId!
      const legacy = makeJpeg(804)
      const result = JSON.stringify({ location: `/v1/dumps/${id}/images/1`, contentType: 'image/jpeg', bytes: legacy.length, sha256: sha256(legacy) })
      await app.persistence.db.insertInto('dump_images').values([{ request_id: id, image_id: 1, status: 'SUCCESS', result, seq: 1 }]).execute()
      await app.persistence.db.updateTable('requests').set({ status: 1 }).where('id', '=', id).execute()
      await area.put(`${userid}/${id}/1.jpg`, legacy)
      const served = await get(`/v1/dumps/${id}/images/1`)
      t.equal(served.statusCode, 200)
      t.equal(served.headers['content-type'], 'image/jpeg', 'its type from the name found')
      t.ok(served.rawPayload.equals(legacy))
      t.equal((await get(`/v1/dumps/${id}/images/2`)).statusCode, 404, 'an image with no object under any name: 404')
      t.equal((await app.inject({ method: 'DELETE', url: `/v1/dumps/${id}`, headers: auth })).statusCode, 204)
      t.notOk((await area.objects()).includes(`${userid}/${id}/1.jpg`), 'deleting the dump removes its object')
    })

    t.test('a large image goes up in parts and is served back identical', async (t) => {
      const size = 12 * 1024 * 1024
      const big = makePng(803, { bytes: size })
      await s3.settled()
      const seen = s3.requests.length
      const answer = (await postDump(app, token, 'json', [{ name: 'Large', images: [origin.url(`/png/803?bytes=${size}`)] }])).json() as Answer
      t.match(imagesOf(answer)[0], { status: 'SUCCESS', bytes: size, sha256: sha256(big) })
      const key = (await storedKeyOf(app, answer.requestId, 1))!
      await s3.settled()
      const path = `/${s3.bucket}/${area.prefix}/${key}`
      const parts = s3.requests.slice(seen).filter((r) => r.method === 'PUT' && r.path === path && r.query.has('partNumber'))
      t.same(parts.map((r) => r.contentLength), [MIN_PART_SIZE, MIN_PART_SIZE, size - 2 * MIN_PART_SIZE], 'three parts: 5, 5 and 2 MiB')
      const served = await get(imagesOf(answer)[0]!.location!)
      t.equal(served.statusCode, 200)
      t.equal(served.rawPayload.length, size)
      t.equal(sha256(served.rawPayload), sha256(big), 'the same bytes')
      const tail = await get(imagesOf(answer)[0]!.location!, { range: `bytes=${size - 100}-` })
      t.equal(tail.statusCode, 206)
      t.ok(tail.rawPayload.equals(big.subarray(size - 100)), 'and its last bytes as a range')
      t.same(await filesUnder(storageDir), [], 'nothing on disk')
    })
  })

  t.test(`${engine}: a dump cut off by a close is resumed by a new instance on the same database and bucket`, async (t) => {
    const area = bucketArea(t)
    const hold = `s3-resume-${engine}-${process.pid}`
    const { app: a, database } = await buildTestApp(t, engine, { STORAGE_URL: area.url })
    const { token, userid } = await gold(a)
    origin.resetCounters()
    let firstDone!: () => void
    const firstImage = new Promise<void>((resolve) => { firstDone = resolve })
    a.dumps.observe({ image: (_id, result) => { if (result.imageId === 1) firstDone() } })
    const inFlight = postDump(a, token, 'json', [{ name: 'Cut off', images: [origin.url('/png/811'), origin.url(`/held/${hold}/png/812`)] }])
    await Promise.all([firstImage, origin.waitForRequests(2)])
    const { id } = await a.persistence.db.selectFrom('requests').select('id').where('userid', '=', userid).where('status', '=', 0).executeTakeFirstOrThrow()
    // the close ends the held download; the outcome it has is recorded before the database closes
    await a.close()
    t.not((await inFlight).statusCode, 200, 'the cut-off request is not answered as a finished dump')
    // what a run cut off elsewhere may leave in the dump's folder: an object no outcome names
    await area.put(`${userid}/${id}/2.jpg`, makeJpeg(999))

    origin.release(hold)
    const { app: b } = await buildTestApp(t, engine, { STORAGE_URL: area.url }, database)
    // SQLite: resumed at start (one process's file); MariaDB: once stale, forced here
    if (engine === 'mysql') t.equal(await b.dumps.resumeUnfinished(0), 1, 'the new instance takes the dump')
    await b.dumps.settled()
    const row = await b.persistence.db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', id).executeTakeFirstOrThrow()
    t.same([Number(row.status), row.resumes], [1, 1], 'completed by one resumption')
    t.same(origin.paths.filter((p) => p === '/png/811'), ['/png/811'], 'the image recorded before the close was kept, not downloaded again')
    const auth = { authorization: `Bearer ${await login(b, sampleUsers.gold.username, sampleUsers.gold.password)}` }
    for (const [n, bytes] of [[1, makePng(811)], [2, makePng(812)]] as const) {
      const served = await b.inject({ method: 'GET', url: `/v1/dumps/${id}/images/${n}`, headers: auth })
      t.equal(served.statusCode, 200, `image ${n}`)
      t.ok(served.rawPayload.equals(bytes), `image ${n}: the bytes its record describes`)
    }
    t.same(await area.objects(), await storedKeys(b, id), 'the bucket holds exactly the recorded successes: the stray object was removed')
  })

  t.test(`${engine}: three instances on one database and one bucket serve each other's images`, async (t) => {
    const area = bucketArea(t)
    const database = await createTestDatabase(engine)
    t.teardown(() => database.drop())
    // each its own STORAGE_DIR (buildTestApp makes one), all the same STORAGE_URL
    const [a, b, c] = [
      await buildTestApp(t, engine, { STORAGE_URL: area.url }, database),
      await buildTestApp(t, engine, { STORAGE_URL: area.url }, database),
      await buildTestApp(t, engine, { STORAGE_URL: area.url }, database)
    ] as const
    const { auth, token } = await gold(a.app)
    const answer = (await postDump(a.app, token, 'json', [{ name: 'Shared', images: [origin.url('/png/821?bytes=5000'), origin.url('/jpeg/822')] }])).json() as Answer
    t.equal(answer.status, 'SUCCESS', 'made on A')
    const expected = [makePng(821, { bytes: 5000 }), makeJpeg(822)]
    for (const [name, instance] of [['B', b], ['C', c]] as const) {
      for (const image of imagesOf(answer)) {
        const served = await instance.app.inject({ method: 'GET', url: image.location!, headers: auth })
        t.equal(served.statusCode, 200, `${name} serves image ${image.imageId}`)
        t.ok(served.rawPayload.equals(expected[image.imageId - 1]!), 'with identical bytes')
        t.equal(served.headers.etag, `"${image.sha256!}"`, 'and the ETag A\'s answer implies')
      }
      t.same(await filesUnder(instance.storageDir), [], `${name}'s STORAGE_DIR stays empty`)
    }
    t.same(await filesUnder(a.storageDir), [], 'and A\'s')
    t.equal((await c.app.inject({ method: 'DELETE', url: `/v1/dumps/${answer.requestId}`, headers: auth })).statusCode, 204, 'C deletes it')
    t.same(await area.objects(), [], 'its objects are gone from the bucket')
    t.equal((await b.app.inject({ method: 'GET', url: imagesOf(answer)[0]!.location!, headers: auth })).statusCode, 404, 'and B no longer serves it')
  })
}
