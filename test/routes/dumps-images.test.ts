import t from 'tap'
import { createHash } from 'node:crypto'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makePng } from '../helpers/images.js'
import { sizedSamples } from '../helpers/sharp-images.js'
import { postDump, type TestItem } from '../helpers/dumps.js'
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
}
