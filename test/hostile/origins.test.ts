/**
 * Hostile origins: servers that lie, stall, flood, loop, reset or do not speak HTTP. Every
 * image ends as a per-image outcome within DOWNLOAD_TIMEOUT_MS (1.5 s here), nothing partial
 * is left on disk, and the service keeps answering.
 *
 * Two origins: the shared test origin (test/helpers/origin.ts) for what node:http can
 * produce, and a raw TCP one for what it will not (1xx, broken framing, huge heads).
 *
 * Decisions asserted here:
 * - MAX_IMAGE_BYTES is inclusive: an image of exactly that size is kept.
 * - Interim responses: 103 Early Hints before the image is fine; an unsolicited
 *   `100 Continue` or `101 Switching Protocols` is a broken exchange (CONNECTION), and
 *   `102 Processing` forever is a TIMEOUT.
 * - Only the final status counts: 3xx without Location, 304 and 999 are HTTP_ERRORs.
 * - Compressed bodies are never inflated: a gzip bomb is a small NOT_AN_IMAGE.
 */
import t from 'tap'
import { makePng } from '../helpers/images.js'
import { filesUnder, storedKeys } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { Sandbox, assertStillStanding, hostileTarget, runCases, runCasesTogether, startRawOrigin, type HostileCase, type RawScript } from './harness.js'

const sandbox = await Sandbox.open(t)
const origin = await startOrigin()
t.teardown(() => origin.close())

const MAX_IMAGE_BYTES = 100_000
const png = makePng(1)
const head = (status: string, headers: string[] = []): string => `HTTP/1.1 ${status}\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n`
const pngResponse = (extra: string[] = []): Buffer => Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', `Content-Length: ${png.length}`, ...extra])), png])
/** writes `text` one byte per `ms`, until the client goes away (the origin tears down the socket at the end) */
const drip = (text: string, ms: number): RawScript => (socket) => {
  let i = 0
  const timer = setInterval(() => { socket.write(text[i++ % text.length]!) }, ms)
  socket.once('close', () => clearInterval(timer))
}

const scripts: Record<string, RawScript> = {
  'continue-then-image': (s) => s.end(Buffer.concat([Buffer.from(head('100 Continue')), pngResponse()])),
  'early-hints-then-image': (s) => s.end(Buffer.concat([Buffer.from(head('103 Early Hints', ['Link: </style.css>; rel=preload'])), pngResponse()])),
  'processing-forever': (s) => s.write(head('102 Processing')),
  'switching-protocols': (s) => s.end(head('101 Switching Protocols', ['Upgrade: websocket', 'Connection: Upgrade'])),
  'huge-header': (s) => s.end(pngResponse([`X-Padding: ${'a'.repeat(100 * 1024)}`])),
  'many-headers': (s) => s.end(pngResponse(Array.from({ length: 5000 }, (_, i) => `X-H${i}: v`))),
  'not-http': (s) => s.end('SSH-2.0-OpenSSH_9.6\r\n'),
  'http-0.9': (s) => s.end(png),
  'close-at-once': (s) => s.end(),
  'slowloris-status-line': drip('HTTP/1.1 200 OK\r\nX-Slow: ', 50),
  'stall-mid-body': (s) => s.write(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', `Content-Length: ${png.length}`])), png.subarray(0, 20)])),
  'length-and-chunked': (s) => s.end(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', 'Content-Length: 5', 'Transfer-Encoding: chunked'])), Buffer.from(`${png.length.toString(16)}\r\n`), png, Buffer.from('\r\n0\r\n\r\n')])),
  'two-lengths': (s) => s.end(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', `Content-Length: ${png.length}`, 'Content-Length: 5'])), png])),
  'negative-length': (s) => s.end(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', 'Content-Length: -1'])), png])),
  'ten-gigabytes': (s) => s.end(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', `Content-Length: ${10 * 1024 ** 3}`])), png])),
  'bad-chunk-size': (s) => s.end(Buffer.concat([Buffer.from(head('200 OK', ['Content-Type: image/png', 'Transfer-Encoding: chunked'])), Buffer.from('zz\r\n'), png])),
  'nul-in-header': (s) => s.end(pngResponse(['X-A: a\0b'])),
  'lf-only': (s) => s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\nContent-Type: image/png\nContent-Length: ${png.length}\n\n`), png])),
  'no-content': (s) => s.end(head('204 No Content')),
  'status-999': (s) => s.end(head('999 Whatever', ['Content-Length: 0'])),
  'no-reason-phrase': (s) => s.end(Buffer.concat([Buffer.from(head('200', [`Content-Length: ${png.length}`])), png])),
  'location-unparsable': (s) => s.end(head('302 Found', ['Location: http://[::1', 'Content-Length: 0']))
}

t.test('through the whole service, ALLOW_PRIVATE_NETWORKS=true', async (t) => {
  const raw = await startRawOrigin(t, scripts)
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(`${warning.name}: ${warning.message}`) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })

  const target = await hostileTarget(t, sandbox, 'sqlite', {
    ALLOW_PRIVATE_NETWORKS: 'true',
    DOWNLOAD_TIMEOUT_MS: '1500',
    MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES)
  })

  const image = (name: string, url: string, outcome: string): HostileCase => ({
    name: `${name} → ${outcome}`,
    request: { payload: JSON.stringify({ items: [{ name, images: [url] }] }) },
    expected: { status: 200, images: [outcome] }
  })
  const o = (path: string): string => origin.url(path)
  const cases: HostileCase[] = [
    // what it says it is
    image('a lying Content-Type (HTML served as image/png)', o('/lying-png'), 'NOT_AN_IMAGE'),
    image('an HTML page', o('/html'), 'NOT_AN_IMAGE'),
    image('an SVG (not a raster image here)', o('/svg'), 'NOT_AN_IMAGE'),
    image('a 204 No Content', raw.url('no-content'), 'NOT_AN_IMAGE'),
    image('a gzip bomb (10 MiB of zeros, never inflated)', o('/gzip-bomb'), 'NOT_AN_IMAGE'),
    // size
    image('an endless body', o('/endless'), 'TOO_LARGE'),
    image('a Content-Length past MAX_IMAGE_BYTES', o(`/big?bytes=${MAX_IMAGE_BYTES * 2}`), 'TOO_LARGE'),
    image('a Content-Length of 10 GB', raw.url('ten-gigabytes'), 'TOO_LARGE'),
    image('an image one byte past MAX_IMAGE_BYTES', o(`/png/2?bytes=${MAX_IMAGE_BYTES + 1}`), 'TOO_LARGE'),
    image('an image of exactly MAX_IMAGE_BYTES is kept', o(`/png/3?bytes=${MAX_IMAGE_BYTES}`), 'SUCCESS'),
    // broken connections
    image('a truncated body (Content-Length larger than what is sent)', o('/truncated'), 'CONNECTION'),
    image('a connection reset midway', o('/reset'), 'CONNECTION'),
    image('a connection closed without an answer', raw.url('close-at-once'), 'CONNECTION'),
    image('not HTTP at all (an SSH banner)', raw.url('not-http'), 'CONNECTION'),
    image('HTTP/0.9: a body without a status line', raw.url('http-0.9'), 'CONNECTION'),
    image('https to a plain HTTP port', `https://127.0.0.1:${origin.port}/png/1`, 'TLS'),
    // framing and heads
    image('Content-Length and Transfer-Encoding together', raw.url('length-and-chunked'), 'CONNECTION'),
    image('two different Content-Lengths', raw.url('two-lengths'), 'CONNECTION'),
    image('a negative Content-Length', raw.url('negative-length'), 'CONNECTION'),
    image('a chunk size that is not hex', raw.url('bad-chunk-size'), 'CONNECTION'),
    image('a NUL in a header value', raw.url('nul-in-header'), 'CONNECTION'),
    image('bare LF line endings', raw.url('lf-only'), 'CONNECTION'),
    image('a 100 KB header', raw.url('huge-header'), 'CONNECTION'),
    image('5 000 headers', raw.url('many-headers'), 'CONNECTION'),
    image('a status line without a reason phrase is fine', raw.url('no-reason-phrase'), 'SUCCESS'),
    // interim responses
    image('103 Early Hints, then the image', raw.url('early-hints-then-image'), 'SUCCESS'),
    image('an unsolicited 100 Continue', raw.url('continue-then-image'), 'CONNECTION'),
    image('an unsolicited 101 Switching Protocols', raw.url('switching-protocols'), 'CONNECTION'),
    // statuses and redirects
    image('a 302 without Location', o('/status/302'), 'HTTP 302'),
    image('a 301 without Location', o('/status/301'), 'HTTP 301'),
    image('a 304 Not Modified', o('/status/304'), 'HTTP 304'),
    image('status 999', raw.url('status-999'), 'HTTP 999'),
    image('a 429 without Retry-After, after its retries', o('/status/429'), 'HTTP 429'),
    image('a 503, after its retries', o('/status/503'), 'HTTP 503'),
    image('a redirect loop', o('/loop'), 'TOO_MANY_REDIRECTS'),
    image('six redirects', o('/redirect/6'), 'TOO_MANY_REDIRECTS'),
    image('five redirects are followed', o('/redirect/5'), 'SUCCESS'),
    image('a redirect to file:///etc/passwd', o(`/redirect-to?url=${encodeURIComponent('file:///etc/passwd')}`), 'INVALID_URL'),
    image('a Location that does not parse', raw.url('location-unparsable'), 'INVALID_URL'),
    image('CR LF in the URL cannot inject a header (the parser drops them)', `${o('/html')}\r\nX-Injected: yes`, 'HTTP 404')
  ]
  // each of these waits out the deadline: they are sent together
  const slow: HostileCase[] = [
    image('a server that never sends headers', o('/no-headers'), 'TIMEOUT'),
    image('a status line dripped one byte at a time', raw.url('slowloris-status-line'), 'TIMEOUT'),
    image('a body that stalls halfway', raw.url('stall-mid-body'), 'TIMEOUT'),
    image('a body trickling for 5 s', o('/slow?ms=5000'), 'TIMEOUT'),
    image('102 Processing, forever', raw.url('processing-forever'), 'TIMEOUT')
  ]
  runCases(t, target, cases)
  runCasesTogether(t, target, 'origins that never finish, all at once', slow)

  t.test('afterwards', async (t) => {
    const successes = cases.filter((c) => c.expected.status === 200 && c.expected.images[0] === 'SUCCESS').length
    const stored = await filesUnder(target.storageDir)
    // identical bytes are stored once per user: one object per distinct success
    t.same(stored, await storedKeys(target.app), 'only the successes are on disk, each object one a success points at')
    t.ok(stored.length >= 1 && stored.length <= successes, `at most one object per success (${stored.length} for ${successes})`)
    t.ok(stored.every((file) => file.endsWith('.png')), `and they are PNGs: ${stored.join(', ')}`)
    t.notOk(origin.requestHeaders.some((headers) => 'x-injected' in headers), 'no header was injected through the URL')
    t.same(warnings, [], 'no process warning (e.g. MaxListenersExceededWarning)')
    await assertStillStanding(t, target, sandbox)
  })
})
