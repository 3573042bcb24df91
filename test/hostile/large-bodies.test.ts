/**
 * Large hostile bodies, over a real listening server (what inject cannot show: what is read
 * off the socket, what the event loop does meanwhile, what the process holds). The test
 * process is the server, but for the memory bound: tap's TypeScript loader alone holds
 * about 400 MiB here, so the peak RSS is read from a server process of its own.
 *
 * Decisions asserted here:
 * - A body nobody reads is not read: a route that takes none, an unknown path and a request
 *   refused before its body (401) are answered at once, and the connection is closed rather
 *   than drained. The login route reads 4 KiB at most.
 * - JSON nested deeper than 64 levels is refused before it is parsed: 16 MiB of `[` cost a
 *   scan of its bytes, not a gigabyte and seconds of JSON.parse.
 * - Answers and log lines built from input quote a short excerpt of it, never the input.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import type { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { request } from 'undici'
import { sha256Hex } from '../../lib/password.js'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startServerProcess } from '../helpers/server-process.js'
import { chunked, errorBody, listen, rawRequest, type RawAnswer } from './harness.js'

const MiB = 1024 * 1024
const BIG = 16 * MiB - 1024 // just under BODY_LIMIT_BYTES (16 MiB by default)

/** Every log line the service writes, as pino writes it. */
class LogLines extends Writable {
  readonly lines: string[] = []
  override _write (chunk: Buffer, _encoding: BufferEncoding, done: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter((line) => line !== ''))
    done()
  }
}

const head = (method: string, path: string, headers: Record<string, string | number>): string =>
  `${method} ${path} HTTP/1.1\r\nHost: localhost\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`

/** A request as bytes: head and body, with a Content-Length or chunked. */
function raw (method: string, path: string, headers: Record<string, string>, body: Buffer, framing: 'length' | 'chunked' = 'length'): Buffer {
  if (framing === 'chunked') return Buffer.concat([Buffer.from(head(method, path, { ...headers, 'Transfer-Encoding': 'chunked' })), chunked(body)])
  return Buffer.concat([Buffer.from(head(method, path, { ...headers, 'Content-Length': body.length })), body])
}

const json = { 'Content-Type': 'application/json', Accept: 'application/json' }

/** Deep JSON bodies of almost 16 MiB: JSON.parse alone would hold a gigabyte for them. */
const deepBodies = (): Record<string, Buffer> => ({
  '16 MiB of [': Buffer.alloc(BIG, '['),
  '8 MiB of [ then 8 MiB of ]': Buffer.concat([Buffer.alloc(BIG / 2, '['), Buffer.alloc(BIG / 2, ']')])
})

/** The peak resident set of a process so far (Linux: VmHWM), in MiB. */
async function peakRssMiB (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/^VmHWM:\s+(\d+) kB$/m.exec(status)![1]) / 1024
}

t.test('the server process holds under 400 MiB while refusing 16 MiB of JSON nesting', {
  skip: existsSync('/proc/self/status') ? false : 'no /proc: the peak RSS of another process cannot be read here'
}, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'image-dump-large-bodies-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const server = await startServerProcess({ DATABASE_URL: `sqlite:${join(dir, 'db.sqlite')}`, STORAGE_DIR: join(dir, 'images') })
  t.teardown(() => server.stop('SIGKILL'))
  const port = Number(new URL(server.baseUrl).port)
  const response = await request(`${server.baseUrl}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: sampleUsers.gold.username, passwordHash: sha256Hex(sampleUsers.gold.password) })
  })
  const { access_token: token } = await response.body.json() as { access_token: string }
  const before = await peakRssMiB(server.child.pid!)
  for (const [name, body] of Object.entries(deepBodies())) {
    const answer = await rawRequest(port, raw('POST', '/v1/dumps', { ...json, Authorization: `Bearer ${token}` }, body))
    t.equal(answer.statusCode, 400, `${name}: 400`)
    t.equal(errorBody(answer).message, 'JSON nested deeper than 64 levels (arrays and objects)', `${name}: naming the limit`)
  }
  const peak = await peakRssMiB(server.child.pid!)
  t.ok(peak < 400, `peak RSS ${Math.round(peak)} MiB (< 400 MiB; ${Math.round(before)} MiB before the two bodies)`)
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: large bodies over HTTP`, async (t) => {
    const log = new LogLines()
    const { app } = await buildTestApp(t, engine, {}, undefined, { logger: { level: 'info', stream: log } })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const port = await listen(app)
    // the server's end of each connection, by the client's port
    const serverSockets = new Map<number, Socket>()
    app.server.on('connection', (socket: Socket) => { serverSockets.set(socket.remotePort ?? 0, socket) })
    /** How many bytes the server read off an exchange's connection, once the server has closed it. */
    const bytesReadBy = async (answer: RawAnswer): Promise<number> => {
      const socket = serverSockets.get(answer.localPort)!
      if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve))
      return socket.bytesRead
    }

    t.test('16 MiB of JSON nesting is refused at once', async (t) => {
      const auth = { ...json, Authorization: `Bearer ${token}` }
      for (const [name, body] of Object.entries(deepBodies())) {
        const answer = await rawRequest(port, raw('POST', '/v1/dumps', auth, body))
        t.equal(answer.statusCode, 400, `${name}: 400`)
        t.equal(errorBody(answer).message, 'JSON nested deeper than 64 levels (arrays and objects)', `${name}: naming the limit`)
        t.ok(answer.ms < 1000, `${name}: answered in ${Math.round(answer.ms)} ms (< 1 s)`)
      }
    })

    t.test('/health answers within 100 ms while four 16 MiB bodies are refused', async (t) => {
      const hostile: Array<{ name: string, bytes: Buffer, status: number }> = [
        { name: 'XML to the login route', bytes: raw('POST', '/v1/auth/token', { 'Content-Type': 'application/xml' }, Buffer.alloc(BIG, '<a')), status: 415 },
        { name: 'chunked JSON to the login route', bytes: raw('POST', '/v1/auth/token', json, Buffer.alloc(BIG, '['), 'chunked'), status: 413 },
        { name: 'JSON to POST /nope', bytes: raw('POST', '/nope', json, Buffer.alloc(BIG, '[')), status: 404 },
        { name: 'a dump without a token', bytes: raw('POST', '/v1/dumps', json, Buffer.alloc(BIG, '[')), status: 401 }
      ]
      const health = async (): Promise<number> => {
        const started = performance.now()
        const response = await request(`http://127.0.0.1:${port}/health`)
        t.equal(response.statusCode, 200)
        await response.body.json()
        return performance.now() - started
      }
      // a connection to ask on, open before the bodies come: what is timed is the answer
      await health()
      let settled = 0
      const answers = hostile.map(async (h) => await rawRequest(port, h.bytes).finally(() => { settled++ }))
      // /health from another connection, again and again until every hostile request is answered
      const latencies: number[] = []
      while (settled < hostile.length) latencies.push(await health())
      const slowest = Math.max(...latencies)
      t.ok(slowest < 100, `slowest of ${latencies.length} /health answers: ${Math.round(slowest)} ms (< 100 ms)`)
      for (const [i, answer] of (await Promise.all(answers)).entries()) {
        const h = hostile[i]!
        t.equal(answer.statusCode, h.status, `${h.name}: ${h.status}`)
        t.equal(answer.headers['connection'], 'close', `${h.name}: the connection is closed`)
        const read = await bytesReadBy(answer)
        t.ok(read < 8 * MiB, `${h.name}: the server read ${Math.round(read / 1024)} KiB of 16 MiB`)
      }
    })

    t.test('a GET route answers without reading a body sent with it', async (t) => {
      const answer = await rawRequest(port, raw('GET', '/health', json, Buffer.alloc(BIG, '[')))
      t.equal(answer.statusCode, 200)
      t.equal(answer.headers['connection'], 'close', 'and closes the connection')
      const read = await bytesReadBy(answer)
      t.ok(read < 8 * MiB, `the server read ${Math.round(read / 1024)} KiB of 16 MiB`)
    })

    t.test('answers and log lines quote the input short', async (t) => {
      const key = 'k'.repeat(BIG)
      const dump = (contentType: string, payload: string | Buffer, headers: Record<string, string> = {}) => app.inject({
        method: 'POST', url: '/v1/dumps', payload, headers: { authorization: `Bearer ${token}`, 'content-type': contentType, ...headers }
      })
      const cases: Array<[string, () => ReturnType<typeof dump>, number, RegExp]> = [
        ['an XML tag name of 16 MiB', () => dump('application/xml', `<items><${'u'.repeat(BIG)}`), 400, /^malformed XML at line 1, column 1: Invalid '.*uuuu'… found\.$/],
        ['an XML entity name of 16 MiB', () => dump('application/xml', `<items>&${'x'.repeat(BIG)};</items>`), 400, /^malformed XML at line 1, column 8: char '&' is not expected\.$/],
        ['an unknown JSON field of 16 MiB', () => dump('application/json', `{"items":[{"name":"x","images":["u"],"${key}":1}]}`), 400, /^items\[0\]: unknown field "kkkk.*"…$/],
        ['a 16 MiB key in the items wrapper', () => dump('application/json', `{"items":{"${key}":1}}`), 400, /^items: unknown field "kkkk.*"… \(expected a list of <item>\)$/],
        ['a 16 MiB key instead of items', () => dump('application/json', `{"${key}":1}`), 400, /^body: expected "items" .*, found "kkkk.*"…$/],
        ['malformed JSON with control characters', () => dump('application/json', `{"items":\u0001\n${'x'.repeat(BIG)}`), 400, /^malformed JSON: Unexpected token/],
        ['a 16 MiB body to the login route', () => app.inject({ method: 'POST', url: '/v1/auth/token', payload: `{"username":"${'u'.repeat(BIG)}`, headers: { 'content-type': 'application/json' } }), 413, /^request body is larger than/],
        ['an 8 KiB media type', () => dump(`application/${'x'.repeat(8192)}`, '{}'), 415, /^unsupported media type "application\/xxxx.*"…: send/],
        ['an 8 KiB charset', () => dump(`application/json; charset=${'x'.repeat(8192)}`, '{}'), 415, /^unsupported charset "xxxx.*"…: send the body in UTF-8$/],
        ['an 8 KiB path nobody serves', () => app.inject({ method: 'GET', url: `/${'p'.repeat(8192)}` }), 404, /^Route GET:\/pppp.*… not found$/]
      ]
      for (const [name, send, status, message] of cases) {
        const before = log.lines.length
        const response = await send()
        t.equal(response.statusCode, status, `${name}: ${status}`)
        t.ok(response.body.length < 1024, `${name}: a ${response.body.length}-byte answer`)
        t.match(errorBody(response).message, message, `${name}: says why`)
        const lines = log.lines.slice(before)
        t.ok(lines.length > 0, `${name}: logged`)
        const longest = Math.max(...lines.map((line) => line.length))
        t.ok(longest < 2048, `${name}: log lines of at most ${longest} characters`)
      }
    })
  })
}
