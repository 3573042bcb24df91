/**
 * GET /v1/dumps/{id}/images/{n} through the object store: a strong ETag from the SHA-256,
 * Last-Modified, 304s, one range (206); several ranges get the whole image; rows and files
 * from before keys were recorded with outcomes are still served.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makeJpeg, makePng } from '../helpers/images.js'
import { filesUnder, postDump } from '../helpers/dumps.js'

const origin = await startOrigin()
t.teardown(() => origin.close())
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: serving a stored image`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    const user = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const png = makePng(701, { bytes: 3000 })
    const answer = (await postDump(app, token, 'json', [{ name: 'P', images: [origin.url('/png/701?bytes=3000')] }])).json()
    const location = answer.items[0].images[0].location as string
    const get = async (headers: Record<string, string> = {}) => await app.inject({ method: 'GET', url: location, headers: { ...auth, ...headers } })

    t.test('a strong ETag that is the SHA-256, Last-Modified, the length', async (t) => {
      const full = await get()
      t.equal(full.statusCode, 200)
      t.equal(full.headers.etag, `"${sha256(png)}"`)
      t.equal(full.headers['content-length'], String(png.length))
      t.equal(full.headers['content-type'], 'image/png')
      t.ok(Date.parse(String(full.headers['last-modified'])) > 0, 'an HTTP date')
      t.same(full.rawPayload, png)
      const head = await app.inject({ method: 'HEAD', url: location, headers: auth })
      t.equal(head.statusCode, 200)
      t.equal(head.headers['content-length'], String(png.length), 'HEAD: the same headers')
      t.equal(head.rawPayload.length, 0, 'and no body')
    })

    t.test('conditional requests', async (t) => {
      const full = await get()
      const lastModified = String(full.headers['last-modified'])
      t.equal((await get({ 'if-none-match': `W/"${sha256(png)}"` })).statusCode, 304, 'the weak comparison applies')
      t.equal((await get({ 'if-none-match': `"x", "${sha256(png)}"` })).statusCode, 304, 'one tag of a list')
      t.equal((await get({ 'if-none-match': '*' })).statusCode, 304, 'any')
      t.equal((await get({ 'if-modified-since': lastModified })).statusCode, 304, 'If-Modified-Since: not modified since')
      t.equal((await get({ 'if-modified-since': new Date(Date.parse(lastModified) - 60_000).toUTCString() })).statusCode, 200, 'modified since an earlier time')
      t.equal((await get({ 'if-none-match': '"x"', 'if-modified-since': lastModified })).statusCode, 200, 'If-None-Match decides when both are sent')
      t.equal((await get({ 'if-modified-since': 'not a date' })).statusCode, 200, 'a date that does not parse is ignored')
    })

    t.test('ranges', async (t) => {
      const multi = await get({ range: 'bytes=0-9,20-29' })
      t.equal(multi.statusCode, 200, 'several ranges: the whole image')
      t.same(multi.rawPayload, png)
      const joined = await get({ range: 'bytes=0-9,10-19' })
      t.equal(joined.statusCode, 206, 'adjacent ranges are one')
      t.same(joined.rawPayload, png.subarray(0, 20))
      t.equal((await get({ range: 'items=0-9' })).statusCode, 200, 'another unit is ignored')
      t.equal((await get({ range: 'bytes=x-y' })).statusCode, 200, 'a malformed range is ignored')
      const unsatisfiable = await get({ range: 'bytes=5000-6000' })
      t.equal(unsatisfiable.statusCode, 416)
      t.equal(unsatisfiable.headers['content-range'], `bytes */${png.length}`)
      const ifRange = await get({ range: 'bytes=0-9', 'if-range': `"${sha256(png)}"` })
      t.equal(ifRange.statusCode, 206, 'If-Range with the ETag: the range')
      t.equal(ifRange.headers['content-length'], '10')
      const stale = await get({ range: 'bytes=0-9', 'if-range': '"something-else"' })
      t.equal(stale.statusCode, 200, 'If-Range with another ETag: the whole image')
      t.same(stale.rawPayload, png)
    })

    t.test('rows and files from before keys were recorded are served as before', async (t) => {
      // a complete dump whose rows name no object: image 2 shares image 1's download (stored_as)
      const admission = await app.quota.admit(user.userid, 1000, { dataformat: 'json', data: Buffer.from('{}') })
      const id = admission.requestId!
      const jpeg = makeJpeg(702)
      const result = (imageId: number) => JSON.stringify({ location: `/v1/dumps/${id}/images/${imageId}`, contentType: 'image/jpeg', bytes: jpeg.length, sha256: sha256(jpeg) })
      await app.persistence.db.insertInto('dump_images').values([
        { request_id: id, image_id: 1, status: 'SUCCESS', result: result(1), seq: 1 },
        { request_id: id, image_id: 2, status: 'SUCCESS', result: result(2), seq: 2, stored_as: 1 }
      ]).execute()
      await app.persistence.db.updateTable('requests').set({ status: 1 }).where('id', '=', id).execute()
      await mkdir(join(storageDir, String(user.userid), String(id)), { recursive: true })
      await writeFile(join(storageDir, String(user.userid), String(id), '1.jpg'), jpeg)
      for (const n of [1, 2]) {
        const served = await app.inject({ method: 'GET', url: `/v1/dumps/${id}/images/${n}`, headers: auth })
        t.equal(served.statusCode, 200, `image ${n}`)
        t.same(served.rawPayload, jpeg)
        t.equal(served.headers['content-type'], 'image/jpeg')
        t.equal(served.headers.etag, `"${sha256(jpeg)}"`, 'its ETag from the SHA-256 its row recorded')
      }
      // a dump complete before outcomes had rows: its file, with a weak ETag
      const older = (await app.quota.admit(user.userid, 1000, { dataformat: 'json', data: Buffer.from('{}') })).requestId!
      await app.persistence.db.updateTable('requests').set({ status: 1 }).where('id', '=', older).execute()
      await mkdir(join(storageDir, String(user.userid), String(older)), { recursive: true })
      await writeFile(join(storageDir, String(user.userid), String(older), '1.png'), png)
      const served = await app.inject({ method: 'GET', url: `/v1/dumps/${older}/images/1`, headers: auth })
      t.equal(served.statusCode, 200)
      t.same(served.rawPayload, png)
      t.match(served.headers.etag, /^W\/"/, 'a weak ETag: no SHA-256 was recorded')
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${older}/images/1`, headers: { ...auth, 'if-none-match': String(served.headers.etag) } })).statusCode, 304)
      t.equal((await app.inject({ method: 'DELETE', url: `/v1/dumps/${id}`, headers: auth })).statusCode, 204, 'such a dump can be deleted')
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${id}/images/1`, headers: auth })).statusCode, 404)
      t.equal((await app.inject({ method: 'DELETE', url: `/v1/dumps/${older}`, headers: auth })).statusCode, 204)
      const left = await filesUnder(storageDir)
      t.notOk(left.some((file) => file.startsWith(`${user.userid}/${id}/`) || file.startsWith(`${user.userid}/${older}/`)), 'their files are gone')
    })
  })
}
