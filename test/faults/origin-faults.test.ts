import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { filesUnder, postDump, storedKeyOf, storedKeys } from '../helpers/dumps.js'
import { makePng } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'

// Fault: an origin that resets connections, stalls before or in the middle of bodies,
// trickles, lies about lengths and never stops, mixed with good images in one dump. Each
// image gets its own, right outcome; the good ones are not held hostage by the bad ones;
// nothing partial stays on disk; the answer comes, bounded by the per-image deadline.

const origin = await startOrigin()
t.teardown(() => origin.close())
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

type Expected = { path: string, status: 'SUCCESS', png: Buffer } | { path: string, status: 'FAILURE', error: Record<string, unknown> }
type Image = { imageId: number, url: string, status: string, sha256?: string, bytes?: number, error?: Record<string, unknown> }

// Long enough that a good image (or a reset one retried twice) makes it on a starved 2-core
// CI box; every stall costs this much, so not longer.
const TIMEOUT_MS = 4000
const timeout = { type: 'INTERNAL_ERROR', code: 'TIMEOUT', message: `the download did not finish within ${TIMEOUT_MS} ms` }
const connection = { type: 'INTERNAL_ERROR', code: 'CONNECTION' }

function cases (run: string): Expected[] {
  return [
    ...Array.from({ length: 8 }, (_, i): Expected => ({ path: `/png/${100 + i}`, status: 'SUCCESS', png: makePng(100 + i) })),
    ...Array.from({ length: 3 }, (_, i): Expected => ({ path: `/reset?n=${i}`, status: 'FAILURE', error: { ...connection, message: /^connection (reset by the origin|closed before the response was complete)$/ } })),
    ...Array.from({ length: 2 }, (_, i): Expected => ({ path: `/reset-once/${run}-${i}?n=${200 + i}`, status: 'SUCCESS', png: makePng(200 + i) })),
    ...Array.from({ length: 3 }, (_, i): Expected => ({ path: `/truncated?n=${300 + i}`, status: 'FAILURE', error: connection })),
    ...Array.from({ length: 2 }, (_, i): Expected => ({ path: `/no-headers?n=${i}`, status: 'FAILURE', error: timeout })),
    ...Array.from({ length: 2 }, (_, i): Expected => ({ path: `/stall?bytes=100&n=${i}`, status: 'FAILURE', error: timeout })),
    ...Array.from({ length: 2 }, (_, i): Expected => ({ path: `/slow?ms=200&n=${400 + i}`, status: 'SUCCESS', png: makePng(400 + i) })),
    { path: '/slow?ms=60000&n=500', status: 'FAILURE', error: timeout },
    { path: '/endless', status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' } },
    { path: '/status/503', status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 503 } }
  ]
}

t.test('one dump mixing good images with resets, stalls and truncations', async (t) => {
  // 32 connections per origin: the 10 stalled downloads must not queue the good ones behind them
  const { app, storageDir } = await buildTestApp(t, 'sqlite', { DOWNLOAD_TIMEOUT_MS: String(TIMEOUT_MS), DOWNLOAD_PER_HOST: '32', MAX_IMAGE_BYTES: '200000' })
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
  const { userid } = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!

  // Two such dumps at once, in both formats: the faults of one must not leak into the other.
  const runs = ['a', 'b'].map((run) => {
    const expected = cases(run)
    // shuffled the same way every time, so bad and good images are interleaved
    const order = expected.map((_, i) => i).sort((x, y) => ((x * 7919) % 31) - ((y * 7919) % 31))
    const urls = order.map((i) => origin.url(expected[i]!.path))
    return { run, expected: order.map((i) => expected[i]!), items: urls.map((url, i) => ({ name: `image ${i}`, images: [url] })) }
  })
  const responses = await Promise.all(runs.map((r, i) => postDump(app, token, i === 0 ? 'json' : 'xml', r.items, { accept: 'application/json' })))

  const expectedFiles = new Set<string>()
  for (const [i, response] of responses.entries()) {
    const { run, expected } = runs[i]!
    t.equal(response.statusCode, 200, `dump ${run} is answered`)
    const answer = response.json()
    t.equal(answer.status, 'PARTIAL')
    const images = answer.items.flatMap((item: { images: Image[] }) => item.images) as Image[]
    t.equal(images.length, expected.length)
    for (const [k, image] of images.entries()) {
      const want = expected[k]!
      if (want.status === 'SUCCESS') {
        t.match(image, { status: 'SUCCESS', bytes: want.png.length, sha256: sha256(want.png) }, `${run}: ${want.path} succeeds`)
        if (image.status !== 'SUCCESS') continue
        // the same bytes in both dumps are stored once: in whichever dump recorded them first
        const file = (await storedKeyOf(app, answer.requestId, image.imageId))!
        t.match(file, new RegExp(`^${userid}/\\d+/\\d+\\.png$`), `${run}: ${want.path} is stored in a dump's folder`)
        expectedFiles.add(file)
        t.equal(sha256(await readFile(join(storageDir, file))), sha256(want.png), `${run}: ${file} holds its bytes`)
      } else {
        t.match(image, { status: 'FAILURE', error: want.error }, `${run}: ${want.path} fails with ${JSON.stringify(want.error)}`)
      }
    }
  }
  t.same(await filesUnder(storageDir), [...expectedFiles].sort(), 'the storage holds the good images only: no .part, nothing partial')
  t.equal(expectedFiles.size, 12, 'each of the 12 distinct good images once')
  t.same(await storedKeys(app), [...expectedFiles].sort(), 'and every object is one a success points at')
  t.equal((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'the service is fine afterwards')
})
