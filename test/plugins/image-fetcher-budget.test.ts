/**
 * The image fetcher's memory budget: what limits downloads in flight is the memory they
 * hold (`memoryBytes`), plus a count (`concurrency`) large enough not to be the limit for
 * slow small images. Real origin on loopback, real files.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { defaults } from '../../config.js'
import {
  IMAGE_HOLD_BYTES,
  START_RESERVATION_BYTES,
  createImageFetcher,
  type FetchOutcome,
  type ImageFetcher,
  type ImageFetcherOptions
} from '../../plugins/image-fetcher.js'
import { makePng } from '../helpers/images.js'
import { startOrigin, type Origin } from '../helpers/origin.js'

const KIB = 1024
let origin: Origin
t.before(async () => { origin = await startOrigin() })
t.teardown(() => origin.close())

interface Harness {
  fetcher: ImageFetcher
  storageDir: string
  fetch (path: string, name: string): Promise<FetchOutcome>
}

async function harness (t: Test, options: Partial<ImageFetcherOptions>): Promise<Harness> {
  const storageDir = await mkdtemp(join(tmpdir(), 'image-fetcher-budget-'))
  const fetcher = createImageFetcher({
    storageDir,
    timeoutMs: 10_000,
    concurrency: 64,
    perHost: 64,
    maxImageBytes: 5_000_000,
    allowPrivateNetworks: true,
    ...options
  })
  t.teardown(async () => {
    await fetcher.close()
    await rm(storageDir, { recursive: true, force: true })
  })
  origin.resetCounters()
  return { fetcher, storageDir, fetch: (path, name) => fetcher.fetchImage(origin.url(path), { dir: '1/42', name }) }
}

/** Resolves once `condition` holds; checked every 5 ms (the fetcher's state has no event of its own). */
async function until (condition: () => boolean, what: string): Promise<void> {
  for (const deadline = Date.now() + 10_000; !condition();) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

const statuses = (outcomes: FetchOutcome[]): string[] => outcomes.map((o) => o.status === 'SUCCESS' ? o.status : `${o.status} ${JSON.stringify(o.error)}`)

t.test('with the service defaults, 200 images an origin answers slowly are all in flight at once', async (t) => {
  // P2's case: with 64 places they went in four waves
  const h = await harness(t, { concurrency: defaults.downloadConcurrency, perHost: defaults.downloadPerHost, memoryBytes: defaults.downloadMemoryBytes })
  const outcomes = await Promise.all(Array.from({ length: 200 }, (_, i) => h.fetch(`/delay/300/png/${i}`, String(i))))
  t.same(statuses(outcomes), Array(200).fill('SUCCESS'))
  t.equal(origin.maxInFlight, 200, 'every request was open at the origin at the same time')
})

t.test('a small image reserves its own size, so many more run at once than larger ones could', async (t) => {
  const memoryBytes = 16 * IMAGE_HOLD_BYTES
  const h = await harness(t, { memoryBytes, concurrency: 100 })
  const waitingAtEnds: number[] = []
  t.teardown(h.fetcher.observe(() => { waitingAtEnds.push(h.fetcher.memory.waitingToGrow) }))
  // headers and Content-Length at once, then a body of a few hundred bytes over 2 s
  const outcomes = await Promise.all(Array.from({ length: 40 }, (_, i) => h.fetch(`/slow?ms=2000&length=1&n=${i}`, String(i))))
  t.same(statuses(outcomes), Array(40).fill('SUCCESS'))
  t.equal(origin.maxInFlight, 40, 'all 40 slow bodies were open at once')
  t.same(waitingAtEnds, Array(40).fill(0), 'none waited for memory, where only 16 of unknown length would have fit')
  const size = makePng(1).length
  t.ok(h.fetcher.memory.peakReservedBytes <= 40 * Math.max(size + 100, START_RESERVATION_BYTES), `each reserved about its own size (peak ${h.fetcher.memory.peakReservedBytes})`)
})

t.test('images larger than what one download holds take the budget in turn', async (t) => {
  const memoryBytes = 1024 * KIB
  const h = await harness(t, { memoryBytes, concurrency: 16 })
  const waitingAtFirstEnd: number[] = []
  t.teardown(h.fetcher.observe(() => { waitingAtFirstEnd.push(h.fetcher.memory.waitingToGrow) }))
  const size = 2 * 1024 * KIB
  const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => h.fetch(`/png/${i}?bytes=${size}`, String(i))))
  t.same(statuses(outcomes), Array(8).fill('SUCCESS'))
  for (const [i, outcome] of outcomes.entries()) {
    t.match(outcome, { bytes: size, sha256: createHash('sha256').update(makePng(i, { bytes: size })).digest('hex') }, `image ${i} stored whole`)
  }
  const { peakReservedBytes } = h.fetcher.memory
  t.ok(peakReservedBytes <= memoryBytes, `never more than the budget reserved (peak ${peakReservedBytes}, unlimited would be ${8 * IMAGE_HOLD_BYTES})`)
  t.ok(waitingAtFirstEnd[0]! >= 1, `when the first ended, others were waiting for memory (${waitingAtFirstEnd[0]})`)
  t.same(h.fetcher.memory, { limitBytes: memoryBytes, reservedBytes: 0, peakReservedBytes, inFlight: 0, queued: 0, waitingToGrow: 0 }, 'everything given back')
})

t.test('an image larger than the whole budget still proceeds, alone', async (t) => {
  const h = await harness(t, { memoryBytes: START_RESERVATION_BYTES, concurrency: 8 })
  const outcomes = await Promise.all(Array.from({ length: 3 }, (_, i) => h.fetch(`/png/${i}?bytes=500000`, String(i))))
  t.same(statuses(outcomes), Array(3).fill('SUCCESS'))
  t.equal(origin.maxInFlight, 1, 'one at a time at the origin')
})

t.test('when every download in flight waits to grow, the oldest goes on: no deadlock', async (t) => {
  // three start reservations fill it, and each then asks for the whole budget
  const h = await harness(t, { memoryBytes: 3 * START_RESERVATION_BYTES, concurrency: 8, timeoutMs: 5000 })
  const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => h.fetch(`/png/${i}?bytes=500000`, String(i))))
  t.same(statuses(outcomes), Array(6).fill('SUCCESS'))
})

/**
 * Room for one grown download and two more start reservations. A download waits to grow
 * only when its growth does not fit, so new ones cannot start while it waits: the two that
 * are to wait to grow are started together, before either has its headers.
 */
const ONE_AT_A_TIME = IMAGE_HOLD_BYTES + 2 * START_RESERVATION_BYTES + 16 * KIB

t.test('waiting for memory does not consume the deadline', async (t) => {
  const timeoutMs = 1500
  const h = await harness(t, { memoryBytes: ONE_AT_A_TIME, timeoutMs })
  const size = 300_000
  // more than undici buffers is sent at once, so a download waiting for memory stops
  // reading its socket (as it would from any origin sending at speed) rather than idling
  const a = h.fetch(`/held-body/deadline-a?bytes=${size}&first=${128 * KIB}&n=1`, 'a')
  await until(() => h.fetcher.memory.reservedBytes === IMAGE_HOLD_BYTES, 'a to hold its share')
  const c = h.fetch(`/held-body/deadline-c?bytes=${size}&first=${128 * KIB}&n=2`, 'c')
  // b's headers come 100 ms after c's, so b is behind c in the line
  const b = h.fetch(`/delay/100/png/3?bytes=${size}`, 'b')
  await until(() => h.fetcher.memory.waitingToGrow === 2, 'c, then b, to wait for memory')
  // b now waits for all of a, then all of c: 2 × 1000 ms, more than its 1500 ms deadline
  setTimeout(() => origin.release('deadline-a'), 1000)
  t.match(await a, { status: 'SUCCESS' })
  await until(() => h.fetcher.memory.waitingToGrow === 1, 'c to have its share')
  setTimeout(() => origin.release('deadline-c'), 1000)
  t.match(await c, { status: 'SUCCESS' }, 'c: about 1000 ms of its own')
  t.match(await b, { status: 'SUCCESS', bytes: size }, 'b: 2000 ms after it started, but only about 100 of them its own')
})

t.test('close() interrupts downloads in flight, waiting for memory, and queued, leaving no file', async (t) => {
  const h = await harness(t, { memoryBytes: ONE_AT_A_TIME })
  const running = h.fetch('/held-body/close-a?bytes=300000', 'a')
  await until(() => h.fetcher.memory.reservedBytes === IMAGE_HOLD_BYTES, 'a to hold its share')
  const growing = h.fetch('/png/2?bytes=300000', 'b')
  const second = h.fetch('/png/3?bytes=300000', 'c')
  await until(() => h.fetcher.memory.waitingToGrow === 2, 'b and c to wait for memory')
  const queued = h.fetch('/png/4', 'd')
  await until(() => h.fetcher.memory.queued === 1, 'd to wait to start')

  await h.fetcher.close()
  for (const [name, outcome] of [['in flight', running], ['waiting to grow', growing], ['waiting to grow, second', second], ['queued', queued]] as const) {
    t.match(await outcome, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' } }, name)
  }
  t.same(origin.paths.map((p) => p.split('?')[0]).sort(), ['/held-body/close-a', '/png/2', '/png/3'], 'the queued image was never requested')
  t.same(await readdir(h.storageDir, { recursive: true }).then((entries) => entries.filter((e) => e.includes('.'))), [], 'no file, temporary or not')
})

t.test('memoryBytes is validated at creation', async (t) => {
  const base: ImageFetcherOptions = { storageDir: tmpdir(), timeoutMs: 1000, concurrency: 1, perHost: 1, maxImageBytes: 1, allowPrivateNetworks: false }
  for (const memoryBytes of [0, -1, 1.5, Number.NaN]) {
    t.throws(() => createImageFetcher({ ...base, memoryBytes }), TypeError, String(memoryBytes))
  }
  const fetcher = createImageFetcher(base)
  t.equal(fetcher.memory.limitBytes, 4 * 1024 * KIB, 'unset: 4 MiB')
  await fetcher.close()
})
