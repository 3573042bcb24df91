import t from 'tap'
import { createHash } from 'node:crypto'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makePng } from '../helpers/images.js'
import { sizedSamples } from '../helpers/sharp-images.js'
import { filesUnder, postDump, type TestItem } from '../helpers/dumps.js'
import { createDumpImages } from '../../db/dump-images.js'

const origin = await startOrigin()
t.teardown(() => origin.close())
const samples = await sizedSamples()

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')
const env = { DOWNLOAD_TIMEOUT_MS: '5000', MAX_IMAGE_BYTES: '10000000', DOWNLOAD_CONCURRENCY: '8' }

type Image = { imageId: number, status: string, bytes?: number, sha256?: string, width?: number, height?: number }
type Item = { name: string, images: Image[] }

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: width and height of stored images`, async (t) => {
    const { app } = await buildTestApp(t, engine, env)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const dumpImages = createDumpImages(app.persistence.db, app.persistence.engine)

    t.test('every format has its size in the answer and in the recorded outcomes', async (t) => {
      const names = Object.keys(samples)
      const items: TestItem[] = names.map((name) => ({ name, images: [origin.serve(name, samples[name]!.bytes)] }))
      const response = await postDump(app, token, 'json', items)
      t.equal(response.statusCode, 200)
      const answer = response.json() as { requestId: number, status: string, items: Item[] }
      t.equal(answer.status, 'SUCCESS')
      const recorded = await dumpImages.outcomes(answer.requestId)
      for (const [index, item] of answer.items.entries()) {
        const sample = samples[item.name]!
        const image = item.images[0]!
        t.match(image, { status: 'SUCCESS', bytes: sample.bytes.length, sha256: sha256(sample.bytes), width: sample.width, height: sample.height }, `${item.name}: ${sample.width}×${sample.height}`)
        t.match(recorded.get(index + 1), { status: 'SUCCESS', width: sample.width, height: sample.height }, `${item.name}: recorded with its size`)
      }
    })

    t.test('an XML answer and the stored XML record carry them as elements', async (t) => {
      const url = origin.serve('xml jpeg', samples['jpeg EXIF orientation 6']!.bytes)
      const response = await postDump(app, token, 'xml', [{ name: 'Turned', images: [url] }])
      t.equal(response.statusCode, 200)
      t.match(response.body, /<sha256>[0-9a-f]{64}<\/sha256><width>200<\/width><height>300<\/height><\/image>/, 'as displayed: EXIF orientation 6 turns 300×200 into 200×300')
      const requestId = /<requestId>(\d+)<\/requestId>/.exec(response.body)![1]
      const stored = await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}`, headers: { authorization: `Bearer ${token}` } })
      t.match(stored.body, /<width>200<\/width><height>300<\/height>/)
    })

    t.test('an image whose header cannot be read is stored without a size', async (t) => {
      // a PNG signature and the start of its IHDR: an image by its magic bytes, with no size to read
      const truncated = makePng(3).subarray(0, 20)
      const url = origin.serve('truncated png', truncated)
      const response = await postDump(app, token, 'json', [{ name: 'Cut', images: [url] }])
      const image = (response.json() as { requestId: number, items: Item[] }).items[0]!.images[0]!
      t.equal(image.status, 'SUCCESS')
      t.equal(image.bytes, 20)
      t.notOk('width' in image, 'no width')
      t.notOk('height' in image, 'no height')
      const file = await app.inject({ method: 'GET', url: `/v1/dumps/${response.json().requestId}/images/1`, headers: { authorization: `Bearer ${token}` } })
      t.equal(file.statusCode, 200)
      t.same(file.rawPayload, truncated, 'the bytes are stored and served')
    })
  })

  t.test(`${engine}: a URL that appears more than once in a dump is downloaded once`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine, env)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }

    t.test('each occurrence has its own entry and its own file, from one request to the origin', async (t) => {
      origin.resetCounters()
      const repeated = origin.url('/png/41')
      const items: TestItem[] = [
        { name: 'A', images: [repeated, origin.url('/png/42'), repeated] },
        { name: 'B', images: [origin.url('/status/404?k=twice'), repeated] },
        // the same resource: the scheme's case and a fragment make no other download
        { name: 'C', images: [`${repeated.replace('http:', 'HTTP:')}#front`, origin.url('/status/404?k=twice')] }
      ]
      const response = await postDump(app, token, 'json', items)
      t.equal(response.statusCode, 200)
      const answer = response.json() as { requestId: number, status: string, items: Array<{ images: Array<Image & { location?: string, error?: unknown }> }> }
      const hits = (path: string): number => origin.paths.filter((p) => p === path).length
      t.equal(hits('/png/41'), 1, 'the repeated URL was requested once')
      t.equal(hits('/status/404?k=twice'), 1, 'a repeated failing URL too')
      t.equal(origin.requests, 3, 'three distinct downloads for seven images')

      const png = makePng(41)
      const images = answer.items.flatMap((item) => item.images)
      const shared = [1, 3, 5, 6].map((id) => images[id - 1]!)
      for (const image of shared) {
        t.match(image, { status: 'SUCCESS', location: `/v1/dumps/${answer.requestId}/images/${image.imageId}`, bytes: png.length, sha256: sha256(png), width: 8, height: 8 }, `image ${image.imageId}: its own entry`)
        const file = await app.inject({ method: 'GET', url: image.location!, headers: auth })
        t.equal(file.statusCode, 200)
        t.same(file.rawPayload, png, `image ${image.imageId}: its file is served under its own index`)
      }
      t.match(images[3], { status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } })
      t.match(images[6], { status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } }, 'the failure is shared')
      const recorded = await createDumpImages(app.persistence.db, app.persistence.engine).outcomes(answer.requestId)
      t.same([...recorded.keys()].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7], 'every occurrence has its recorded outcome')
      const files = (await filesUnder(storageDir)).filter((f) => f.includes(`/${answer.requestId}/`))
      t.same(files.map((f) => f.split('/').at(-1)).sort(), ['1.png', '2.png'], 'one file per download, no temporary file')
    })

    t.test('in an XML dump too', async (t) => {
      origin.resetCounters()
      const url = origin.url('/jpeg/43')
      const response = await postDump(app, token, 'xml', [{ name: 'X', images: [url, url] }, { name: 'Y', images: [url] }])
      t.equal(response.statusCode, 200)
      t.equal(origin.requests, 1)
      t.equal(response.body.match(/<status>SUCCESS<\/status>/g)?.length, 4, 'three images and the dump')
    })
  })
}
