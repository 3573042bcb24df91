import { createHash } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import Fastify from 'fastify'
import t, { type Test } from 'tap'
import imageFetcherPlugin, {
  createGuardedConnector,
  createGuardedLookup,
  createImageFetcher,
  FetchGroup,
  type FetchOutcome,
  type ImageFetcher,
  type ImageFetcherOptions
} from '../../plugins/image-fetcher.js'
import { STARTS_PER_TURN } from '../../lib/download/start-pacer.js'
import { SAMPLES, makeJpeg, makePng } from '../helpers/images.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { countTurns } from '../helpers/turns.js'

// One origin for the whole file; each test resets its counters and gets its own storage dir.
let origin: Origin
t.before(async () => { origin = await startOrigin() })
t.teardown(() => origin.close())

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

/** Every file under `dir`, as posix paths relative to it. */
async function filesUnder (dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => relative(dir, join(e.parentPath, e.name)).split('\\').join('/'))
    .sort()
}

interface Harness {
  fetcher: ImageFetcher
  storageDir: string
  /** fetches an origin path (or an absolute URL) into target dir "1/42" under `name` */
  fetch (pathOrUrl: string, name?: string): Promise<FetchOutcome>
}

async function harness (t: Test, options: Partial<ImageFetcherOptions> = {}): Promise<Harness> {
  const storageDir = await mkdtemp(join(tmpdir(), 'image-fetcher-'))
  const fetcher = createImageFetcher({
    storageDir,
    timeoutMs: 5_000,
    concurrency: 8,
    perHost: 8,
    maxImageBytes: 1_000_000,
    allowPrivateNetworks: true,
    ...options
  })
  t.teardown(async () => {
    await fetcher.close()
    await rm(storageDir, { recursive: true, force: true })
  })
  origin.resetCounters()
  return {
    fetcher,
    storageDir,
    fetch: (pathOrUrl, name = '7') =>
      fetcher.fetchImage(/^[a-z]+:/i.test(pathOrUrl) ? pathOrUrl : origin.url(pathOrUrl), { dir: '1/42', name })
  }
}

/** Asserts a failure with this error, and that nothing at all was left in storage. */
async function assertFailure (t: Test, h: Harness, outcome: FetchOutcome, expected: Record<string, unknown>): Promise<void> {
  t.equal(outcome.status, 'FAILURE', 'fails')
  if (outcome.status === 'FAILURE') {
    t.match(outcome.error, expected, `error ${JSON.stringify(outcome.error)}`)
    if (outcome.error.type === 'INTERNAL_ERROR') {
      t.type(outcome.error.message, 'string')
      t.ok(outcome.error.message.length > 0 && outcome.error.message.length < 120 && !outcome.error.message.includes('\n'), 'short, one-line message')
    }
  }
  t.same(await filesUnder(h.storageDir), [], 'no file (temporary or not) left in storage')
}

async function assertStored (t: Test, h: Harness, outcome: FetchOutcome, expected: { path: string, bytes: Buffer, contentType: string }): Promise<void> {
  t.same(outcome, {
    status: 'SUCCESS',
    path: expected.path,
    contentType: expected.contentType,
    bytes: expected.bytes.length,
    sha256: sha256(expected.bytes),
    // read from the header while it streamed by: every PNG and JPEG of images.ts is 8×8
    width: 8,
    height: 8
  })
  t.same(await readFile(join(h.storageDir, expected.path)), expected.bytes, 'the stored bytes are what the origin served')
  t.same(await filesUnder(h.storageDir), [expected.path], 'only the image is stored, no temporary file')
}

t.test('downloads', async (t) => {
  t.test('a PNG is stored under the server-made name with its sniffed extension', async (t) => {
    const h = await harness(t)
    const outcome = await h.fetch('/png/3')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(3), contentType: 'image/png' })
  })

  t.test('a JPEG', async (t) => {
    const h = await harness(t)
    const outcome = await h.fetch('/jpeg/5', '8')
    await assertStored(t, h, outcome, { path: '1/42/8.jpg', bytes: makeJpeg(5), contentType: 'image/jpeg' })
  })

  t.test('every sniffed type, whatever the URL looks like', async (t) => {
    const h = await harness(t)
    let name = 0
    for (const [ext, route] of [['png', '/png/1'], ['jpg', '/jpeg/1'], ['gif', '/gif'], ['webp', '/webp'], ['avif', '/avif'], ['bmp', '/bmp'], ['tiff', '/tiff']] as const) {
      const outcome = await h.fetch(route, String(++name))
      t.match(outcome, { status: 'SUCCESS', path: `1/42/${name}.${ext}`, contentType: SAMPLES[ext]!.contentType, sha256: sha256(SAMPLES[ext]!.bytes) }, ext)
    }
    t.equal((await filesUnder(h.storageDir)).length, 7)
  })

  t.test('a larger body is streamed whole', async (t) => {
    const h = await harness(t)
    const outcome = await h.fetch('/png/9?kb=300')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(9, { bytes: 300 * 1024 }), contentType: 'image/png' })
  })

  t.test('an image of exactly maxImageBytes is kept', async (t) => {
    const h = await harness(t, { maxImageBytes: 5000 })
    t.match(await h.fetch('/png/1?bytes=5000'), { status: 'SUCCESS', bytes: 5000 })
  })

  t.test('the target directory is created as needed, and may be the storage root', async (t) => {
    const h = await harness(t)
    t.match(await h.fetcher.fetchImage(origin.url('/png/1'), { dir: '9/1000/deep', name: '1' }), { status: 'SUCCESS', path: '9/1000/deep/1.png' })
    t.match(await h.fetcher.fetchImage(origin.url('/png/1'), { dir: '', name: 'top' }), { status: 'SUCCESS', path: 'top.png' })
  })

  t.test('sends a User-Agent and asks for the body as-is (no content encoding)', async (t) => {
    const h = await harness(t, { userAgent: 'test-agent/1' })
    t.match(await h.fetch('/png/1'), { status: 'SUCCESS' })
    t.match(origin.requestHeaders[0], { 'user-agent': 'test-agent/1', 'accept-encoding': 'identity' })
  })
})

t.test('HTTP errors', async (t) => {
  for (const status of [404, 500, 403, 410]) {
    t.test(`${status} is an HTTP_ERROR carrying the status, tried once`, async (t) => {
      const h = await harness(t)
      await assertFailure(t, h, await h.fetch(`/status/${status}`), { type: 'HTTP_ERROR', httpStatus: status })
      t.equal(origin.requests, 1)
    })
  }
})

t.test('content that is not an image', async (t) => {
  for (const [route, why] of [
    ['/html', 'an HTML page'],
    ['/lying-png', 'HTML served as image/png: the bytes decide, not the header'],
    ['/svg', 'SVG is not a raster image'],
    ['/gzip-bomb', 'a gzip-encoded body is stored as sent (never decompressed) and is no image'],
    ['/status/200', 'plain text']
  ]) {
    t.test(`${route}: ${why}`, async (t) => {
      const h = await harness(t)
      await assertFailure(t, h, await h.fetch(route), { type: 'INTERNAL_ERROR', code: 'NOT_AN_IMAGE' })
    })
  }
})

t.test('limits', async (t) => {
  t.test('a body slower than the deadline is a TIMEOUT (the deadline is total, not idle)', async (t) => {
    // bytes arrive every 150 ms, well inside timeoutMs, but the whole body takes 3 s
    const h = await harness(t, { timeoutMs: 600 })
    await assertFailure(t, h, await h.fetch('/slow?ms=3000'), { type: 'INTERNAL_ERROR', code: 'TIMEOUT' })
  })

  t.test('a slow body inside the deadline is fine', async (t) => {
    const h = await harness(t, { timeoutMs: 5_000 })
    const outcome = await h.fetch('/slow?ms=200&n=4')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(4), contentType: 'image/png' })
  })

  t.test('an origin that never answers is a TIMEOUT', async (t) => {
    const h = await harness(t, { timeoutMs: 500 })
    await assertFailure(t, h, await h.fetch('/no-headers'), { type: 'INTERNAL_ERROR', code: 'TIMEOUT' })
  })

  t.test('an endless body is TOO_LARGE once it passes maxImageBytes', async (t) => {
    const h = await harness(t, { maxImageBytes: 200_000 })
    await assertFailure(t, h, await h.fetch('/endless'), { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' })
  })

  t.test('a Content-Length over maxImageBytes is TOO_LARGE before the body is read', async (t) => {
    const h = await harness(t, { maxImageBytes: 100_000 })
    await assertFailure(t, h, await h.fetch('/big?bytes=50000000'), { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' })
  })

  t.test('one byte over maxImageBytes is TOO_LARGE', async (t) => {
    const h = await harness(t, { maxImageBytes: 4999 })
    await assertFailure(t, h, await h.fetch('/png/1?bytes=5000'), { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' })
  })
})

t.test('redirects', async (t) => {
  t.test('up to maxRedirects hops are followed (relative Locations resolved)', async (t) => {
    const h = await harness(t)
    const outcome = await h.fetch('/redirect/5?n=6')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(6), contentType: 'image/png' })
    t.same(origin.paths, ['/redirect/5?n=6', '/redirect/4?n=6', '/redirect/3?n=6', '/redirect/2?n=6', '/redirect/1?n=6', '/redirect/0?n=6'])
  })

  t.test('one hop more is TOO_MANY_REDIRECTS, and the extra hop is not requested', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/redirect/6'), { type: 'INTERNAL_ERROR', code: 'TOO_MANY_REDIRECTS' })
    t.equal(origin.requests, 6)
  })

  t.test('maxRedirects is an option', async (t) => {
    const h = await harness(t, { maxRedirects: 1 })
    t.match(await h.fetch('/redirect/1'), { status: 'SUCCESS' })
    await rm(join(h.storageDir, '1'), { recursive: true })
    await assertFailure(t, h, await h.fetch('/redirect/2'), { type: 'INTERNAL_ERROR', code: 'TOO_MANY_REDIRECTS' })
  })

  t.test('a loop is TOO_MANY_REDIRECTS as soon as a URL repeats', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/loop'), { type: 'INTERNAL_ERROR', code: 'TOO_MANY_REDIRECTS' })
    t.equal(origin.requests, 1)
  })

  t.test('a redirect to another scheme is INVALID_URL', async (t) => {
    const h = await harness(t)
    for (const target of ['ftp://example.com/a.png', 'file:///etc/passwd', 'data:image/png;base64,iVBORw0KGgo=']) {
      await assertFailure(t, h, await h.fetch(`/redirect-to?url=${encodeURIComponent(target)}`), { type: 'INTERNAL_ERROR', code: 'INVALID_URL' })
    }
  })

  t.test('a 3xx without Location is an HTTP_ERROR', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/status/302'), { type: 'HTTP_ERROR', httpStatus: 302 })
  })
})

t.test('connection failures', async (t) => {
  t.test('a connection reset mid-body is CONNECTION after the retries', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/reset'), { type: 'INTERNAL_ERROR', code: 'CONNECTION' })
    t.equal(origin.requests, 3, 'one attempt and two retries')
  })

  t.test('a body shorter than its Content-Length is CONNECTION', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/truncated'), { type: 'INTERNAL_ERROR', code: 'CONNECTION' })
  })

  t.test('a refused connection is CONNECTION, not retried', async (t) => {
    const h = await harness(t)
    const closed = await startOrigin()
    const url = closed.url('/png/1')
    await closed.close()
    await assertFailure(t, h, await h.fetch(url), { type: 'INTERNAL_ERROR', code: 'CONNECTION' })
  })

  t.test('an unresolvable host is DNS', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('http://nonexistent.invalid/a.png'), { type: 'INTERNAL_ERROR', code: 'DNS' })
  })

  t.test('a certificate nobody trusts is TLS', async (t) => {
    const h = await harness(t)
    const secure = await startOrigin({ tls: true })
    t.teardown(() => secure.close())
    await assertFailure(t, h, await h.fetch(secure.url('/png/1')), { type: 'INTERNAL_ERROR', code: 'TLS' })
    t.equal(secure.requests, 0, 'no request was sent over the untrusted connection')
  })

  t.test('https to a port that speaks plain HTTP is TLS', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch(`https://127.0.0.1:${origin.port}/png/1`), { type: 'INTERNAL_ERROR', code: 'TLS' })
  })
})

t.test('retries', async (t) => {
  t.test('a reset connection is retried', async (t) => {
    const h = await harness(t)
    const outcome = await h.fetch('/reset-once/a?n=11')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(11), contentType: 'image/png' })
    t.equal(origin.requests, 2)
  })

  t.test('a 503 is retried', async (t) => {
    const h = await harness(t)
    t.match(await h.fetch('/503-once/b'), { status: 'SUCCESS', sha256: sha256(makePng(1)) })
    t.equal(origin.requests, 2)
  })

  t.test('a 429 is retried after its Retry-After', async (t) => {
    const h = await harness(t)
    t.match(await h.fetch('/429-once/c'), { status: 'SUCCESS', sha256: sha256(makePng(1)) })
    t.equal(origin.requests, 2)
  })

  t.test('a 429 asking for more than 5 s is final', async (t) => {
    const h = await harness(t)
    await assertFailure(t, h, await h.fetch('/429-once/d?after=60'), { type: 'HTTP_ERROR', httpStatus: 429 })
    t.equal(origin.requests, 1)
  })

  t.test('a 503 that persists is final after `retries` extra attempts', async (t) => {
    const h = await harness(t, { retries: 1 })
    await assertFailure(t, h, await h.fetch('/status/503'), { type: 'HTTP_ERROR', httpStatus: 503 })
    t.equal(origin.requests, 2)
  })

  t.test('retries: 0 turns them off', async (t) => {
    const h = await harness(t, { retries: 0 })
    await assertFailure(t, h, await h.fetch('/reset-once/e'), { type: 'INTERNAL_ERROR', code: 'CONNECTION' })
    t.equal(origin.requests, 1)
  })

  t.test('not retried: 4xx, TOO_LARGE, NOT_AN_IMAGE, TIMEOUT', async (t) => {
    const h = await harness(t, { maxImageBytes: 1000, timeoutMs: 400 })
    for (const [route, code] of [['/status/400', 400], ['/big?bytes=5000', 'TOO_LARGE'], ['/html', 'NOT_AN_IMAGE'], ['/no-headers', 'TIMEOUT']] as const) {
      origin.resetCounters()
      const outcome = await h.fetch(route)
      t.match(outcome, { status: 'FAILURE', error: typeof code === 'number' ? { httpStatus: code } : { code } }, route)
      t.equal(origin.requests, 1, `${route} requested once`)
    }
  })
})

t.test('invalid URLs are refused before any request', async (t) => {
  const h = await harness(t)
  for (const url of [
    'ftp://example.com/a.png',
    'file:///etc/passwd',
    'javascript:alert(1)',
    'data:image/png;base64,iVBORw0KGgo=',
    'gopher://127.0.0.1:70/',
    'not a url',
    '/relative/path.png',
    '',
    'http://',
    `http://user:secret@127.0.0.1:${origin.port}/png/1`,
    `http://127.0.0.1:${origin.port}/${'a'.repeat(9000)}`
  ]) {
    const outcome = await h.fetcher.fetchImage(url, { dir: '1/42', name: '7' })
    await assertFailure(t, h, outcome, { type: 'INTERNAL_ERROR', code: 'INVALID_URL' })
  }
  t.equal(origin.connections, 0)
})

t.test('storage', async (t) => {
  t.test('targets outside storageDir are refused as IO and nothing is written anywhere', async (t) => {
    const parent = await mkdtemp(join(tmpdir(), 'image-fetcher-parent-'))
    t.teardown(() => rm(parent, { recursive: true, force: true }))
    const storageDir = join(parent, 'images')
    await mkdir(storageDir)
    const fetcher = createImageFetcher({ storageDir, timeoutMs: 5000, concurrency: 2, perHost: 2, maxImageBytes: 1_000_000, allowPrivateNetworks: true })
    t.teardown(() => fetcher.close())
    origin.resetCounters()
    const targets = [
      { dir: '../x', name: '1' },
      { dir: '..', name: '1' },
      { dir: '1/../../x', name: '1' },
      { dir: parent, name: '1' },
      { dir: '/tmp', name: '1' },
      { dir: '1', name: '../../x' },
      { dir: '1', name: 'a/b' },
      { dir: '1', name: '..' },
      { dir: '1', name: '.hidden' },
      { dir: '1', name: '' },
      { dir: '1\0', name: '1' }
    ]
    for (const target of targets) {
      const outcome = await fetcher.fetchImage(origin.url('/png/1'), target)
      t.match(outcome, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'IO' } }, JSON.stringify(target))
    }
    for (const target of [null, undefined, 'x', { dir: 1, name: '1' }]) {
      // JavaScript callers can pass anything; still an outcome, never an exception
      const outcome = await fetcher.fetchImage(origin.url('/png/1'), target as unknown as { dir: string, name: string })
      t.match(outcome, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'IO' } }, `target ${JSON.stringify(target)}`)
    }
    t.same(await filesUnder(parent), [], 'nothing written, inside or outside storageDir')
    t.equal(origin.requests, 0, 'refused before downloading')
    // a dir that merely mentions dots but stays inside is fine
    t.match(await fetcher.fetchImage(origin.url('/png/1'), { dir: '1/../2', name: '3' }), { status: 'SUCCESS', path: '2/3.png' })
  })

  t.test('a file system error is IO, and the download is not kept', async (t) => {
    const h = await harness(t)
    // a file where the target directory should be: mkdir fails (ENOTDIR/EEXIST)
    await writeFile(join(h.storageDir, '1'), 'not a directory')
    const outcome = await h.fetch('/png/1')
    t.match(outcome, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'IO' } })
    t.same(await filesUnder(h.storageDir), ['1'], 'only the obstacle is there')
  })

  t.test('an existing image of the same target is replaced atomically', async (t) => {
    const h = await harness(t)
    t.match(await h.fetch('/png/1'), { status: 'SUCCESS' })
    const outcome = await h.fetch('/png/2')
    await assertStored(t, h, outcome, { path: '1/42/7.png', bytes: makePng(2), contentType: 'image/png' })
  })

  t.test('a target directory removed between two images is made again', async (t) => {
    // the fetcher remembers the directories it made; one removed behind its back must not break it
    const h = await harness(t)
    t.match(await h.fetch('/png/1', '1'), { status: 'SUCCESS', path: '1/42/1.png' })
    await rm(join(h.storageDir, '1'), { recursive: true, force: true })
    t.match(await h.fetch('/png/2', '2'), { status: 'SUCCESS', path: '1/42/2.png' })
    t.same(await filesUnder(h.storageDir), ['1/42/2.png'])
  })
})

t.test('concurrency', async (t) => {
  t.test('at most `concurrency` images are in flight, and they do overlap', async (t) => {
    const h = await harness(t, { concurrency: 3, perHost: 16 })
    const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => h.fetch(`/delay/200/png/${i}`, String(i))))
    t.ok(outcomes.every((o) => o.status === 'SUCCESS'), 'all 12 succeed')
    t.equal(origin.requests, 12)
    t.ok(origin.maxInFlight <= 3, `never more than 3 in flight (saw ${origin.maxInFlight})`)
    t.ok(origin.maxInFlight >= 2, `downloads run in parallel (saw ${origin.maxInFlight})`)
  })

  t.test('a batch is started a few downloads per turn of the event loop: the first requests reach the origin before the last one is set up', async (t) => {
    const h = await harness(t, { concurrency: 128, perHost: 128 })
    const count = 128
    // what the origin had received when undici created each request
    const seenAtCreate: number[] = []
    const clock = countTurns()
    const createdInTurn = new Map<number, number>()
    const onCreate = (): void => {
      seenAtCreate.push(origin.requests)
      createdInTurn.set(clock.turn, (createdInTurn.get(clock.turn) ?? 0) + 1)
    }
    diagnostics.subscribe('undici:request:create', onCreate)
    t.teardown(() => { clock.stop(); diagnostics.unsubscribe('undici:request:create', onCreate) })
    const key = `paced-${Date.now()}`
    const outcomes = Array.from({ length: count }, (_, i) => h.fetch(`/held/${key}/png/${i}`, String(i)))
    await origin.waitForRequests(count)
    origin.release(key)
    t.ok((await Promise.all(outcomes)).every((o) => o.status === 'SUCCESS'), 'all succeed')
    t.equal(seenAtCreate.length, count, 'one request each')
    t.ok(Math.max(...createdInTurn.values()) <= STARTS_PER_TURN, `at most ${STARTS_PER_TURN} set up in one turn (saw ${Math.max(...createdInTurn.values())})`)
    t.ok(seenAtCreate.at(-1)! > 0, `the origin had ${seenAtCreate.at(-1)} requests when the last was set up`)
  })

  t.test('at most `perHost` connections to one origin', async (t) => {
    const h = await harness(t, { concurrency: 10, perHost: 2 })
    const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => h.fetch(`/delay/100/png/${i}`, String(i))))
    t.ok(outcomes.every((o) => o.status === 'SUCCESS'))
    t.ok(origin.connections <= 2, `connections: ${origin.connections}`)
    t.ok(origin.maxInFlight <= 2, `in flight: ${origin.maxInFlight}`)
  })

  t.test('waiting in the queue does not consume the deadline', async (t) => {
    // 6 images of 200 ms one at a time take 1.2 s, more than the 1 s deadline of each
    const h = await harness(t, { concurrency: 1, timeoutMs: 1000 })
    const outcomes = await Promise.all(Array.from({ length: 6 }, (_, i) => h.fetch(`/delay/200/png/${i}`, String(i))))
    t.same(outcomes.map((o) => o.status), Array(6).fill('SUCCESS'))
    t.equal(origin.maxInFlight, 1)
  })

  t.test('two fetchers share nothing: each enforces its own limit', async (t) => {
    const a = await harness(t, { concurrency: 1 })
    const b = await harness(t, { concurrency: 1 })
    const outcomes = await Promise.all([
      a.fetch('/delay/200/png/1', '1'), a.fetch('/delay/200/png/2', '2'),
      b.fetch('/delay/200/png/3', '3'), b.fetch('/delay/200/png/4', '4')
    ])
    t.ok(outcomes.every((o) => o.status === 'SUCCESS'))
    t.equal(origin.maxInFlight, 2, 'one from each fetcher at a time')
  })
})

t.test('SSRF guard', async (t) => {
  t.test('loopback, private and link-local targets are BLOCKED_ADDRESS without a single connection', async (t) => {
    const h = await harness(t, { allowPrivateNetworks: false })
    const port = origin.port
    for (const host of ['127.0.0.1', 'localhost', '127.1', '2130706433', '0x7f000001', '[::1]', '[::ffff:127.0.0.1]', '[::ffff:7f00:1]', '0.0.0.0', '0', '169.254.169.254', '10.0.0.1', '[fe80::1]']) {
      await assertFailure(t, h, await h.fetch(`http://${host}:${port}/png/1`), { type: 'INTERNAL_ERROR', code: 'BLOCKED_ADDRESS' })
    }
    t.equal(origin.connections, 0, 'the origin never saw a connection')
  })

  t.test('a name resolving to a blocked address is refused at lookup, before connecting', async (t) => {
    // a policy of our own: only 127.0.0.1 is allowed, so "localhost" passes and 127.0.0.2 does not
    const h = await harness(t, { allowPrivateNetworks: false, blockedAddress: (ip) => ip !== '127.0.0.1' })
    t.match(await h.fetch(`http://localhost:${origin.port}/png/1`), { status: 'SUCCESS' }, 'allowed by the custom policy')
    const strict = await harness(t, { allowPrivateNetworks: false, blockedAddress: () => true })
    await assertFailure(t, strict, await strict.fetch(`http://localhost:${origin.port}/png/1`), { type: 'INTERNAL_ERROR', code: 'BLOCKED_ADDRESS' })
    t.equal(origin.connections, 0, 'the refused name never connected')
  })

  t.test('a redirect to a blocked address is refused without connecting to it', async (t) => {
    const inside = await startOrigin({ host: '127.0.0.2' })
    t.teardown(() => inside.close())
    const h = await harness(t, { allowPrivateNetworks: false, blockedAddress: (ip) => ip !== '127.0.0.1' })
    const outcome = await h.fetch(`/redirect-to?url=${encodeURIComponent(inside.url('/png/1'))}`)
    await assertFailure(t, h, outcome, { type: 'INTERNAL_ERROR', code: 'BLOCKED_ADDRESS' })
    t.equal(origin.requests, 1, 'the first hop was allowed')
    t.equal(inside.connections, 0, 'the blocked hop never connected')
    // the same redirect with the guard off is followed, proving the route works
    const open = await harness(t)
    t.match(await open.fetch(`/redirect-to?url=${encodeURIComponent(inside.url('/png/1'))}`), { status: 'SUCCESS' })
    t.equal(inside.requests, 1)
  })

  t.test('the lookup refuses a name when any of its addresses is blocked', async (t) => {
    const lookup = createGuardedLookup((ip) => ip.startsWith('127.'))
    const error = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
      lookup('localhost', { all: true }, (err) => resolve(err))
    })
    t.equal(error?.code, 'ERR_BLOCKED_ADDRESS')
    const allowed = await new Promise<unknown>((resolve, reject) => {
      createGuardedLookup(() => false)('localhost', {}, (err, address) => err === null ? resolve(address) : reject(err))
    })
    t.equal(allowed, '127.0.0.1', 'a single address when `all` was not asked for')
  })

  t.test('the connector refuses a socket whose peer address is blocked (literals skip lookup)', async (t) => {
    origin.resetCounters()
    const connect = createGuardedConnector((ip) => ip === '127.0.0.1', { timeout: 2000 })
    const error = await new Promise<Error | null>((resolve) => {
      connect({ hostname: '127.0.0.1', host: `127.0.0.1:${origin.port}`, protocol: 'http:', port: String(origin.port) }, (err, socket) => {
        socket?.destroy()
        resolve(err)
      })
    })
    t.match(error, { code: 'ERR_BLOCKED_ADDRESS' })
    t.equal(origin.requests, 0, 'nothing was sent on it')
    const open = createGuardedConnector(() => false, { timeout: 2000 })
    const socket = await new Promise((resolve, reject) => {
      open({ hostname: '127.0.0.1', protocol: 'http:', port: String(origin.port) }, (err, socket) => err === null ? resolve(socket) : reject(err))
    })
    t.ok(socket, 'an allowed address connects')
    const connected = socket as { destroy (): void }
    connected.destroy()
  })

  t.test('allowPrivateNetworks: true reaches loopback', async (t) => {
    const h = await harness(t, { allowPrivateNetworks: true })
    t.match(await h.fetch(`http://localhost:${origin.port}/png/1`), { status: 'SUCCESS' })
  })
})

t.test('close', async (t) => {
  t.test('in-flight and queued downloads end as INTERRUPTED, leaving no file', async (t) => {
    const h = await harness(t, { concurrency: 1, timeoutMs: 10_000 })
    const running = h.fetch('/slow?ms=5000', '1')
    const queued = h.fetch('/png/2', '2')
    await origin.waitForRequests(1)
    await h.fetcher.close()
    await assertFailure(t, h, await running, { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' })
    await assertFailure(t, h, await queued, { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' })
    await assertFailure(t, h, await h.fetch('/png/3', '3'), { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' })
    t.equal(origin.requests, 1, 'the queued image was never requested')
  })

  t.test('close is idempotent', async (t) => {
    const h = await harness(t)
    await Promise.all([h.fetcher.close(), h.fetcher.close()])
    await h.fetcher.close()
    t.pass()
  })
})

t.test('options are validated at creation', async (t) => {
  const base: ImageFetcherOptions = { storageDir: tmpdir(), timeoutMs: 1000, concurrency: 1, perHost: 1, maxImageBytes: 1, allowPrivateNetworks: false }
  for (const bad of [{ concurrency: 0 }, { timeoutMs: -1 }, { perHost: 1.5 }, { maxImageBytes: Number.NaN }, { storageDir: '' }, { retries: -1 }, { maxRedirects: 0.5 }]) {
    t.throws(() => createImageFetcher({ ...base, ...bad }), TypeError, JSON.stringify(bad))
  }
})

t.test('the Fastify plugin', async (t) => {
  t.test('decorates imageFetcher and closes it, connections included, with the app', async (t) => {
    const storageDir = await mkdtemp(join(tmpdir(), 'image-fetcher-app-'))
    t.teardown(() => rm(storageDir, { recursive: true, force: true }))
    origin.resetCounters()
    const app = Fastify()
    await app.register(imageFetcherPlugin, { storageDir, timeoutMs: 5000, concurrency: 2, perHost: 2, maxImageBytes: 1_000_000, allowPrivateNetworks: true })
    await app.ready()
    t.type(app.imageFetcher.fetchImage, 'function')
    t.match(await app.imageFetcher.fetchImage(origin.url('/png/1'), { dir: '1/1', name: '1' }), { status: 'SUCCESS', path: '1/1/1.png' })
    t.equal(origin.openConnections, 1, 'a pooled keep-alive connection stays open')
    await app.close()
    // the origin keeps idle connections for 60 s: only the fetcher closing its Agent ends this one
    await origin.waitForNoConnections()
    t.match(await app.imageFetcher.fetchImage(origin.url('/png/1'), { dir: '1/1', name: '2' }), { status: 'FAILURE', error: { code: 'INTERRUPTED' } })
  })

  t.test('two apps in one process have separate fetchers and limits', async (t) => {
    const storageDir = await mkdtemp(join(tmpdir(), 'image-fetcher-apps-'))
    t.teardown(() => rm(storageDir, { recursive: true, force: true }))
    const options = { storageDir, timeoutMs: 5000, concurrency: 1, perHost: 4, maxImageBytes: 1_000_000, allowPrivateNetworks: true }
    const one = Fastify()
    const two = Fastify()
    await one.register(imageFetcherPlugin, options).ready()
    await two.register(imageFetcherPlugin, options).ready()
    t.teardown(async () => { await one.close(); await two.close() })
    t.not(one.imageFetcher, two.imageFetcher)
    origin.resetCounters()
    const outcomes = await Promise.all([
      one.imageFetcher.fetchImage(origin.url('/delay/200/png/1'), { dir: 'one', name: '1' }),
      one.imageFetcher.fetchImage(origin.url('/delay/200/png/2'), { dir: 'one', name: '2' }),
      two.imageFetcher.fetchImage(origin.url('/delay/200/png/3'), { dir: 'two', name: '1' }),
      two.imageFetcher.fetchImage(origin.url('/delay/200/png/4'), { dir: 'two', name: '2' })
    ])
    t.ok(outcomes.every((o) => o.status === 'SUCCESS'))
    t.equal(origin.maxInFlight, 2, 'each app ran one at a time, side by side')
    await one.close()
    t.match(await two.imageFetcher.fetchImage(origin.url('/png/5'), { dir: 'two', name: '3' }), { status: 'SUCCESS' }, 'closing one app leaves the other working')
  })
})

t.test('an image that ends within one write batch touches the storage only once it is whole', async (t) => {
  const { fetcher, storageDir } = await harness(t)
  const group = new FetchGroup()
  // 4 KiB announced, 3000 bytes sent, then nothing: its type is known, its end is not
  const stalled = fetcher.fetchImage(origin.url('/stall?bytes=3000&n=1'), { dir: '1/42', name: '1' }, group)
  // another download of the same size that ends, on the same connection pool, after the stalled one has its bytes
  await origin.waitForRequests(1)
  t.match(await fetcher.fetchImage(origin.url('/png/2?bytes=4096'), { dir: '1/42', name: '2' }), { status: 'SUCCESS' })
  t.same(await filesUnder(storageDir), ['1/42/2.png'], 'the stalled one has neither a file nor a temporary file')
  group.abort()
  t.match(await stalled, { status: 'FAILURE', error: { code: 'INTERRUPTED' } })
  t.same(await filesUnder(storageDir), ['1/42/2.png'], 'and leaves none when stopped')
})

t.test('a FetchGroup stops its own downloads, in flight and queued, and no others', async (t) => {
  const { fetcher, storageDir } = await harness(t, { concurrency: 2 })
  const group = new FetchGroup()
  const target = (name: string) => ({ dir: '1/42', name })
  // one slot for the group's stalled download, one for a download of no group; the group's
  // second download waits in the queue
  // more than one write batch arrives before the stall, so a temporary file is being written
  const stalled = fetcher.fetchImage(origin.url('/stall?bytes=140000&size=300000&n=1'), target('1'), group)
  const other = fetcher.fetchImage(origin.url('/held/group/png/2'), target('2'))
  const queued = fetcher.fetchImage(origin.url('/png/3'), target('3'), group)
  await origin.waitForRequests(2)
  for (const deadline = Date.now() + 5000; !(await filesUnder(storageDir)).includes('1/42/1.png.part');) {
    if (Date.now() > deadline) throw new Error('the stalled download wrote nothing')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }

  group.abort()
  t.match(await stalled, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'INTERRUPTED' } }, 'in flight: stopped')
  t.match(await queued, { status: 'FAILURE', error: { code: 'INTERRUPTED' } }, 'queued: stopped without being sent')
  t.match(await fetcher.fetchImage(origin.url('/png/4'), target('4'), group), { status: 'FAILURE', error: { code: 'INTERRUPTED' } }, 'started after: stopped at once')
  t.same(origin.paths, ['/stall?bytes=140000&size=300000&n=1', '/held/group/png/2'], 'neither reached the origin')
  origin.release('group')
  t.match(await other, { status: 'SUCCESS' }, 'a download of no group goes on')
  t.same(await filesUnder(storageDir), ['1/42/2.png'], 'the stopped one left no temporary file')
})
