/**
 * The hostile-input corpus's shared machinery. Every case of every class is a row
 * `{ name, request, expected }` run through the real HTTP stack of the whole service, and
 * every class ends with the same invariants:
 *
 * - the service still answers `GET /health` 200;
 * - `Object.prototype` (and Array's and Function's) are exactly as they were at start;
 * - nothing was written outside STORAGE_DIR (the test process works in an empty folder of a
 *   sandbox, beside the storage folder and a sentinel folder: all three are checked) and no
 *   `.part` file is left anywhere;
 * - a refused request (4xx) wrote no `requests` row, and an admitted one exactly one, complete
 *   (an asynchronous one once its dump has run in the background).
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { STATUS_CODES } from 'node:http'
import net, { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Engine } from '../../db/schema.js'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { countRows, filesUnder } from '../helpers/dumps.js'

// ---------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------

export type Headers = Record<string, string | string[] | undefined>

export interface HostileRequest {
  /** merged over the class defaults; `undefined` removes a default (e.g. no Authorization) */
  headers?: Headers
  payload?: string | Buffer
  method?: 'POST' | 'GET'
  url?: string
}

/** Refused before admission: this status, a message saying why, nothing logged or written. */
export interface Refused {
  status: 400 | 401 | 413 | 415 | 431
  message: RegExp
  /** response headers that must be present, e.g. `{ 'www-authenticate': /^Bearer/ }` */
  headers?: Record<string, RegExp>
}

/**
 * Admitted: 200, one complete `requests` row, and per image (in order) its outcome:
 * 'SUCCESS', an INTERNAL_ERROR code ('INVALID_URL', 'TIMEOUT', …) or 'HTTP <status>'.
 * Several codes separated by '|' accept any of them (for outcomes that depend on the host).
 * 202 (Prefer: respond-async): Location and Preference-Applied, then the same once the
 * dump has run in the background, read from its record.
 */
export interface Admitted {
  status: 200 | 202
  images: string[]
  /** fields the first item is answered with, e.g. its name exactly as the parser read it */
  item?: Record<string, unknown>
}

/** Whether a case's expectation is an admission (200, or 202 for an asynchronous one). */
export function isAdmitted (expected: Refused | Admitted): expected is Admitted {
  return expected.status === 200 || expected.status === 202
}

export interface HostileCase {
  name: string
  request: HostileRequest
  expected: Refused | Admitted
}

// ---------------------------------------------------------------------------
// The service under attack
// ---------------------------------------------------------------------------

export interface Target {
  app: FastifyInstance
  engine: Engine
  storageDir: string
  /** alice's (gold) token, the default Authorization of every case */
  token: string
  /** defaults merged under every case's headers */
  defaults: Headers
}

const snapshot = (proto: object): string[] => Object.getOwnPropertyNames(proto).sort()
const PROTOTYPES = { Object: Object.prototype, Array: Array.prototype, Function: Function.prototype } as const
const pristine = Object.fromEntries(Object.entries(PROTOTYPES).map(([name, proto]) => [name, snapshot(proto)]))
/** property names hostile payloads try to plant on Object.prototype */
export const POLLUTION_MARKERS = ['polluted', 'isAdmin', 'admin', 'x', 'toString2'] as const

/**
 * An empty folder tree for one test file: `cwd/` (the process works in it while the file
 * runs), `sentinel/` (one file, never to change) and a storage folder per app. Anything
 * the service wrote outside its STORAGE_DIR lands in one of them, or beside them.
 */
export class Sandbox {
  private readonly storages = new Set<string>()
  private constructor (readonly root: string) {}

  static async open (t: Test): Promise<Sandbox> {
    const root = await mkdtemp(join(tmpdir(), 'image-dump-hostile-'))
    await mkdir(join(root, 'cwd'))
    await mkdir(join(root, 'sentinel'))
    await writeFile(join(root, 'sentinel', 'sentinel.txt'), 'nothing else may appear here\n')
    const previous = process.cwd()
    process.chdir(join(root, 'cwd'))
    t.teardown(async () => {
      process.chdir(previous)
      await rm(root, { recursive: true, force: true })
    })
    return new Sandbox(root)
  }

  /** A fresh STORAGE_DIR inside the sandbox. */
  storage (name: string): string {
    this.storages.add(name)
    return join(this.root, name)
  }

  /** Everything below the sandbox root that is a file, relative to it. */
  async files (): Promise<string[]> {
    const entries = await readdir(this.root, { recursive: true, withFileTypes: true })
    return entries.filter((e) => !e.isDirectory()).map((e) => relative(this.root, join(e.parentPath, e.name))).sort()
  }

  /** No file outside the storage folders, none in cwd, the sentinel alone, no `.part` anywhere. */
  async check (t: Test): Promise<void> {
    const files = await this.files()
    const outside = files.filter((f) => f !== join('sentinel', 'sentinel.txt') && ![...this.storages].some((s) => f.startsWith(`${s}/`)))
    t.same(outside, [], 'no file outside STORAGE_DIR (sandbox cwd and sentinel folder untouched)')
    t.same(files.filter((f) => f.endsWith('.part')), [], 'no .part file left under STORAGE_DIR')
    const top = (await readdir(this.root)).sort()
    t.same(top, ['cwd', 'sentinel', ...[...this.storages].filter((s) => top.includes(s))].sort(), 'nothing new beside STORAGE_DIR')
  }
}

export async function hostileTarget (t: Test, sandbox: Sandbox, engine: Engine, env: Record<string, string> = {}, defaults: Headers = {}): Promise<Target> {
  const storageDir = sandbox.storage(`storage-${engine}-${Math.random().toString(36).slice(2, 8)}`)
  const { app } = await buildTestApp(t, engine, { LOG_LEVEL: 'silent', ...env, STORAGE_DIR: storageDir })
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
  return {
    app,
    engine,
    storageDir,
    token,
    defaults: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json', ...defaults }
  }
}

function mergeHeaders (...layers: Array<Headers | undefined>): Record<string, string | string[]> {
  const merged: Headers = {}
  for (const layer of layers) {
    for (const [name, value] of Object.entries(layer ?? {})) merged[name.toLowerCase()] = value
  }
  const out: Record<string, string | string[]> = {}
  for (const [name, value] of Object.entries(merged)) if (value !== undefined) out[name] = value
  return out
}

export async function send (target: Target, request: HostileRequest): Promise<LightMyRequestResponse> {
  return await target.app.inject({
    method: request.method ?? 'POST',
    url: request.url ?? '/v1/dumps',
    // light-my-request sends an array value as that many header fields
    headers: mergeHeaders(target.defaults, request.headers) as Record<string, string>,
    ...(request.payload === undefined ? {} : { payload: request.payload })
  })
}

const XML_TEXT_ENTITIES: Record<string, string> = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&apos;': "'" }

/** The `{statusCode, error, message}` of an error answer, JSON or XML. */
export function errorBody (response: { headers: Record<string, unknown>, body: string }): { statusCode: number, error: string, message: string } {
  if (String(response.headers['content-type'] ?? '').startsWith('application/xml')) {
    // <error><statusCode>…</statusCode><error>…</error><message>…</message></error>
    const unescape = (text: string): string => text.replace(/&(?:amp|lt|gt|quot|apos);/g, (entity) => XML_TEXT_ENTITIES[entity]!)
    const match = /<error><statusCode>(\d+)<\/statusCode><error>([^<]*)<\/error><message>([\s\S]*?)<\/message><\/error>$/.exec(response.body)
    return { statusCode: Number(match?.[1]), error: unescape(match?.[2] ?? ''), message: unescape(match?.[3] ?? '') }
  }
  return JSON.parse(response.body) as { statusCode: number, error: string, message: string }
}

interface ImageAnswer { status: string, error?: { type: string, code?: string, httpStatus?: number, message?: string } }

/** Per image, in order: 'SUCCESS', the INTERNAL_ERROR code, or 'HTTP <status>'. */
export function imageOutcomes (body: { items: Array<{ images: ImageAnswer[] }> }): string[] {
  return body.items.flatMap((item) => item.images.map((image) => {
    if (image.status === 'SUCCESS') return 'SUCCESS'
    if (image.error?.type === 'HTTP_ERROR') return `HTTP ${String(image.error.httpStatus)}`
    return image.error?.code ?? `? ${JSON.stringify(image)}`
  }))
}

/** Whether `actual` is one of the '|'-separated codes of `expected`. */
const outcomeMatches = (actual: string, expected: string): boolean => expected.split('|').includes(actual)

export async function assertRefused (t: Test, response: { statusCode: number, headers: Record<string, unknown>, body: string }, expected: Refused): Promise<void> {
  t.equal(response.statusCode, expected.status, `answered ${expected.status}`)
  const body = errorBody(response)
  t.equal(body.statusCode, expected.status, 'the error body repeats the status')
  t.equal(body.error, STATUS_CODES[expected.status], 'and names it')
  t.match(body.message, expected.message, `says why: ${JSON.stringify(body.message).slice(0, 160)}`)
  for (const [name, pattern] of Object.entries(expected.headers ?? {})) {
    t.match(String(response.headers[name] ?? ''), pattern, `${name} header`)
  }
}

/** Every file under the storage folder (none before the first image). */
async function stored (target: Target): Promise<string[]> {
  return await filesUnder(target.storageDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return []
    throw error
  })
}

/**
 * Checks one answer against its case. `rows` is how many `requests` rows the case added,
 * when it can be told apart (requests sent one at a time).
 */
async function assertAnswer (t: Test, target: Target, c: HostileCase, response: LightMyRequestResponse, rows?: number): Promise<void> {
  t.ok(response.statusCode < 500, `never a 5xx (got ${response.statusCode})`)
  if (!isAdmitted(c.expected)) {
    await assertRefused(t, response, c.expected)
    if (rows !== undefined) t.equal(rows, 0, 'no requests row for refused input')
    return
  }
  const { status } = c.expected
  t.equal(response.statusCode, status, `admitted: ${response.statusCode === status ? '' : response.body.slice(0, 200)}`)
  if (response.statusCode !== status) return
  type Answer = { requestId: number, items: Array<{ images: ImageAnswer[] } & Record<string, unknown>> }
  let body = JSON.parse(response.body) as Answer
  if (status === 202) {
    const location = `/v1/dumps/${body.requestId}`
    t.equal(response.headers.location, location, 'Location: the dump\'s record')
    t.equal(response.headers['preference-applied'], 'respond-async')
    await target.app.dumps.backgroundSettled()
    const record = await target.app.inject({ method: 'GET', url: location, headers: { authorization: String(target.defaults.authorization) } })
    body = { ...JSON.parse(record.body) as Answer, requestId: body.requestId }
  }
  const outcomes = imageOutcomes(body)
  t.equal(outcomes.length, c.expected.images.length, 'one outcome per image')
  c.expected.images.forEach((expected, i) => {
    t.ok(outcomeMatches(outcomes[i]!, expected), `image ${i + 1}: ${outcomes[i]} (expected ${expected})`)
  })
  for (const image of body.items.flatMap((item) => item.images)) {
    if (image.error?.type === 'INTERNAL_ERROR') t.ok(typeof image.error.message === 'string' && image.error.message !== '', 'an internal error says why')
  }
  if (c.expected.item !== undefined) t.has(body.items[0], c.expected.item, 'the item as the service read it')
  if (rows !== undefined) t.equal(rows, 1, 'exactly one requests row')
  const row = await target.app.persistence.db.selectFrom('requests').select('status').where('id', '=', body.requestId).executeTakeFirstOrThrow()
  t.equal(Number(row.status), 1, 'and it is complete')
}

/** Runs one case as a subtest: the answer, the request log and the storage folder. */
export function runCase (t: Test, target: Target, c: HostileCase): void {
  t.test(c.name, async (t) => {
    const [rowsBefore, filesBefore] = [await countRows(target.app), await stored(target)]
    const response = await send(target, c.request)
    await assertAnswer(t, target, c, response, await countRows(target.app) - rowsBefore)
    if (!isAdmitted(c.expected)) t.same(await stored(target), filesBefore, 'and no file written')
  })
}

export function runCases (t: Test, target: Target, cases: readonly HostileCase[]): void {
  for (const c of cases) runCase(t, target, c)
}

/**
 * Runs cases whose requests may overlap (e.g. each waits out a deadline): all are sent at
 * once, then each answer is checked in a subtest of its own; the request log must have
 * grown by exactly the number of admitted cases.
 */
export function runCasesTogether (t: Test, target: Target, name: string, cases: readonly HostileCase[]): void {
  t.test(name, async (t) => {
    const before = await countRows(target.app)
    const responses = await Promise.all(cases.map((c) => send(target, c.request)))
    const admitted = cases.filter((c) => isAdmitted(c.expected)).length
    t.equal(await countRows(target.app) - before, admitted, 'one requests row per admitted case, none for the others')
    cases.forEach((c, i) => t.test(c.name, async (t) => { await assertAnswer(t, target, c, responses[i]!) }))
  })
}

/** The invariants every class ends with (see the header of this file). */
export async function assertStillStanding (t: Test, target: Target, sandbox: Sandbox): Promise<void> {
  const health = await target.app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200, 'GET /health still answers 200')
  t.same(health.json(), { status: 'ok', database: 'reachable' })
  for (const [name, proto] of Object.entries(PROTOTYPES)) {
    t.same(snapshot(proto), pristine[name], `${name}.prototype has exactly its own properties`)
  }
  const probe: Record<string, unknown> = {}
  for (const marker of POLLUTION_MARKERS) t.equal(probe[marker], undefined, `({}).${marker} is undefined`)
  await sandbox.check(t)
}

// ---------------------------------------------------------------------------
// Raw HTTP: what app.inject cannot express (duplicated fields, framing, header sizes)
// ---------------------------------------------------------------------------

export interface RawResponse {
  statusCode: number
  headers: Record<string, string>
  body: string
}

/** Sends `bytes` as they are to a listening server and reads the first answer until the server closes. */
export async function rawExchange (port: number, bytes: string | Buffer): Promise<RawResponse> {
  const text = await new Promise<string>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.end(bytes) })
    const chunks: Buffer[] = []
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('utf8')))
  })
  const split = text.indexOf('\r\n\r\n')
  const [statusLine, ...lines] = text.slice(0, split).split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  let body = text.slice(split + 4)
  // the first answer only (Content-Length framed, as Fastify and Node answer)
  if (headers['content-length'] !== undefined) body = Buffer.from(body).subarray(0, Number(headers['content-length'])).toString('utf8')
  return { statusCode: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers, body }
}

export interface RawAnswer extends RawResponse {
  /** milliseconds from connecting to the whole answer */
  ms: number
  /** the client's port: which of the server's sockets this exchange was */
  localPort: number
}

/**
 * Sends `bytes` to a listening server and resolves with the first answer as soon as it is
 * complete (Content-Length framed), sent or not sent all of `bytes`: a server may answer
 * before it reads a body, and close. The socket is destroyed then.
 */
export async function rawRequest (port: number, bytes: Buffer): Promise<RawAnswer> {
  const started = performance.now()
  return await new Promise<RawAnswer>((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => { socket.write(bytes, () => {}) })
    const chunks: Buffer[] = []
    let done = false
    const answered = (): boolean => {
      const received = Buffer.concat(chunks)
      const split = received.indexOf('\r\n\r\n')
      if (split === -1) return false
      const [statusLine, ...lines] = received.subarray(0, split).toString('latin1').split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of lines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      const length = Number(headers['content-length'] ?? 0)
      if (received.length - split - 4 < length) return false
      done = true
      const localPort = socket.localPort ?? 0
      socket.destroy()
      resolve({
        statusCode: Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0),
        headers,
        body: received.subarray(split + 4, split + 4 + length).toString('utf8'),
        ms: performance.now() - started,
        localPort
      })
      return true
    }
    socket.on('data', (chunk: Buffer) => { chunks.push(chunk); answered() })
    // a server that answered and closed resets a client still sending: the answer counts
    socket.on('error', (error) => { if (!done && !answered()) reject(error) })
    socket.on('close', () => { if (!done && !answered()) reject(new Error('the connection closed before an answer')) })
  })
}

/** `body` in chunked transfer coding, 64 KiB a chunk. */
export function chunked (body: Buffer): Buffer {
  const parts: Buffer[] = []
  for (let at = 0; at < body.length; at += 64 * 1024) {
    const chunk = body.subarray(at, at + 64 * 1024)
    parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n'))
  }
  parts.push(Buffer.from('0\r\n\r\n'))
  return Buffer.concat(parts)
}

/** A POST /v1/dumps request as raw bytes, one header line per entry. */
export function rawDump (headerLines: readonly string[], payload: string): string {
  return `POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n${headerLines.map((line) => `${line}\r\n`).join('')}` +
    `Content-Length: ${Buffer.byteLength(payload)}\r\n\r\n${payload}`
}

export async function listen (app: FastifyInstance): Promise<number> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  return (app.server.address() as AddressInfo).port
}

// ---------------------------------------------------------------------------
// A raw TCP origin: misbehaviour node:http will not produce (1xx, broken framing, huge heads)
// ---------------------------------------------------------------------------

export type RawScript = (socket: net.Socket) => void

export interface RawOrigin {
  port: number
  url (name: string): string
  /** requests received, by script name */
  readonly hits: Readonly<Record<string, number>>
}

/**
 * Answers `GET /<name>` by running `scripts[name]` on the socket, which writes whatever bytes
 * it likes. Sockets are destroyed at teardown, so a script may leave one hanging.
 */
export async function startRawOrigin (t: Test, scripts: Record<string, RawScript>): Promise<RawOrigin> {
  const sockets = new Set<net.Socket>()
  const hits: Record<string, number> = {}
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    let head = ''
    const onData = (chunk: Buffer): void => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      const name = /^GET \/([^ ?]*)/.exec(head)?.[1] ?? ''
      hits[name] = (hits[name] ?? 0) + 1
      const script = scripts[name]
      if (script === undefined) socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
      else script(socket)
    }
    socket.on('data', onData)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  const port = (server.address() as AddressInfo).port
  return { port, url: (name) => `http://127.0.0.1:${port}/${name}`, hits }
}
