/**
 * Content-addressed storage per user: identical bytes are stored once per user, and each
 * dump's image points at them; another user's identical bytes are theirs.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makePng } from '../helpers/images.js'
import { filesUnder, postDump } from '../helpers/dumps.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

type Image = { imageId: number, status: string, location: string, sha256: string, bytes: number }

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: identical bytes are stored once per user`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine)
    const gold = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const silver = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
    const goldUser = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const silverUser = (await app.imageDumpUsers.findByUsername(sampleUsers.silver.username))!
    const png = makePng(501)
    // two URLs with the same bytes: the same resource by another name
    const first = await postDump(app, gold, 'json', [{ name: 'A', images: [origin.url('/png/501'), origin.url('/png/502')] }])
    const second = await postDump(app, gold, 'json', [{ name: 'B', images: [origin.url('/png/501?again=1'), origin.url('/redirect/1?n=501')] }])
    t.equal(first.statusCode, 200)
    t.equal(second.statusCode, 200)
    const a = first.json() as { requestId: number, items: Array<{ images: Image[] }> }
    const b = second.json() as { requestId: number, items: Array<{ images: Image[] }> }

    t.test('one object on disk for bytes two dumps downloaded: the first one\'s', async (t) => {
      const files = await filesUnder(storageDir)
      t.same(files, [`${goldUser.userid}/${a.requestId}/1.png`, `${goldUser.userid}/${a.requestId}/2.png`], 'the second dump stored nothing: its bytes were stored already')
      const images = [...a.items[0]!.images, ...b.items[0]!.images]
      for (const image of [images[0]!, images[2]!, images[3]!]) {
        t.match(image, { status: 'SUCCESS', sha256: sha256(png), bytes: png.length }, `image ${image.location}: the same sha256`)
      }
      const rows = await app.persistence.db.selectFrom('stored_objects').selectAll().where('userid', '=', goldUser.userid).execute()
      t.equal(rows.length, 2, 'one object per distinct bytes')
    })

    t.test('every image is served from the shared object, with the same ETag', async (t) => {
      const auth = { authorization: `Bearer ${gold}` }
      const served = []
      for (const location of [a.items[0]!.images[0]!.location, ...b.items[0]!.images.map((image) => image.location)]) {
        const response = await app.inject({ method: 'GET', url: location, headers: auth })
        t.equal(response.statusCode, 200, location)
        t.same(response.rawPayload, png, `${location}: the bytes`)
        t.equal(response.headers['content-type'], 'image/png')
        served.push(response.headers.etag)
      }
      t.same(served, served.map(() => `"${sha256(png)}"`), 'a strong ETag, the SHA-256 of the bytes, for each')
      const again = await app.inject({ method: 'GET', url: b.items[0]!.images[1]!.location, headers: { ...auth, 'if-none-match': String(served[0]) } })
      t.equal(again.statusCode, 304, 'one ETag for the bytes, whichever dump shows them')
    })

    t.test('not across users: another user\'s identical bytes are stored for them', async (t) => {
      const response = await postDump(app, silver, 'json', [{ name: 'C', images: [origin.url('/png/501')] }])
      const { requestId } = response.json() as { requestId: number }
      t.ok((await filesUnder(storageDir)).includes(`${silverUser.userid}/${requestId}/1.png`), 'an object of their own')
      const served = await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}/images/1`, headers: { authorization: `Bearer ${silver}` } })
      t.same(served.rawPayload, png)
      const forGold = await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}/images/1`, headers: { authorization: `Bearer ${gold}` } })
      t.equal(forGold.statusCode, 404, 'and only theirs')
    })
  })
}
