/**
 * A real HTTP origin for tests and benchmarks: a node:http server on 127.0.0.1 (or another
 * loopback address; or HTTPS with a self-signed certificate), on a free port, serving real images and every misbehaviour a download
 * has to survive. It counts what reaches it, so tests can assert on the network itself
 * (how many connections were opened, how many requests overlapped) instead of on timings.
 *
 * ```ts
 * const origin = await startOrigin()
 * t.teardown(() => origin.close())
 * await fetcher.fetchImage(origin.url('/png/7'), target)  // body is makePng(7)
 * t.equal(origin.connections, 1)
 * ```
 *
 * Routes (a route that ends in a PNG serves `makePng(n)`, n from `?n=` or 1 unless the path
 * names it; `/png/<n>` and `/delay/.../png/<n>` take n from the path):
 *
 * | path | response |
 * |---|---|
 * | `/png/<n>[?bytes=N or ?kb=K]` | `makePng(n)` (padded to exactly N bytes / K KiB when given), Content-Length set |
 * | `/png/<n>?etag=1[&bytes=N]` | the same with an ETag, and 304 (no body) to an If-None-Match that names it |
 * | `/jpeg/<n>` | `makeJpeg(n)` |
 * | `/gif`, `/webp`, `/avif`, `/bmp`, `/tiff` | the fixtures from `images.ts` |
 * | `/svg` | an SVG document, served as image/svg+xml (not an image here) |
 * | `/html` | an HTML page |
 * | `/lying-png` | `Content-Type: image/png` over HTML bytes |
 * | `/status/<code>` | that status, a short text body |
 * | `/slow?ms=T[&bytes=N][&length=1]` | headers at once, then the PNG's bytes (padded to N) in 20 pieces spread over T ms (chunked; with `length=1`, Content-Length set) |
 * | `/delay/<ms>/png/<n>[?bytes=N]` | nothing for `ms`, then the whole PNG (padded to N bytes when given) |
 * | `/endless` | a PNG signature followed by zeros forever (chunked, with backpressure) |
 * | `/big?bytes=N` | Content-Length 8+N: a PNG signature then N zero bytes |
 * | `/redirect/<k>` | 302 with a relative Location to `<k-1>` (query kept); `/redirect/0` is the PNG |
 * | `/loop` | 302 to itself |
 * | `/redirect-to?url=U[&status=S]` | redirect (302 or S) to U, anywhere |
 * | `/reset` | headers and part of a PNG, then a TCP reset |
 * | `/reset-once/<key>` | the first request for `key` is reset like `/reset`, later ones get the PNG |
 * | `/503-once/<key>` | 503 the first time for `key`, then the PNG |
 * | `/429-once/<key>[?after=S]` | 429 with `Retry-After: S` (default 1) the first time, then the PNG |
 * | `/gzip-bomb` | `Content-Encoding: gzip` of 10 MiB of zeros (about 10 KB on the wire) |
 * | `/no-headers` | reads the request and never answers |
 * | `/truncated` | Content-Length larger than the PNG it sends, then closes the connection |
 * | `/stall?bytes=B[&size=S]` | headers (Content-Length of a PNG of S bytes, default 4 KiB) and its first B bytes (default 64), then nothing, connection open |
 * | `/stall-once/<key>?bytes=B[&size=S]` | the first request for `key` stalls like `/stall`, later ones get the whole PNG |
 * | `/held/<key>/png/<n>` | nothing until `release(key)` is called, then the PNG; once released, answers at once |
 * | `/held-body/<key>?bytes=N[&first=F]` | headers (Content-Length of `makePng(n)` padded to N bytes) and its first F bytes (default 64) at once, the rest once `release(key)` is called |
 * | `/files/<name>` | the bytes given to `serve(name, bytes)`, Content-Length set, served as application/octet-stream |
 * | anything else | 404 |
 *
 * Keys of the `-once` and `held` routes are remembered until `resetCounters()`; use a fresh key per test.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { gzipSync } from 'node:zlib'
import { AVIF, BMP, GIF, TIFF, WEBP, makeJpeg, makePng } from './images.js'

export interface OriginOptions {
  /** address to listen on [127.0.0.1]; any 127.x.y.z works on Linux (all of 127/8 is loopback) */
  host?: string
  /**
   * serve HTTPS with TEST_TLS_CERT, a self-signed certificate for 127.0.0.1 and localhost that
   * no client trusts by default: fetching from it is a certificate failure [false]
   */
  tls?: boolean
}

/**
 * Test-only key pair (P-256, valid 2000-2100, SAN IP:127.0.0.1 and DNS:localhost). It protects
 * nothing; it exists so tests can meet a real TLS certificate failure.
 */
export const TEST_TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg2sXoHMBg+6pXrzxR
lzWUiJg/nWWAw3nKo5FRUV+CCVShRANCAASqGIstCUwJrG5fbleMk+xdKWkl4NWD
UrXnXYYNhfoXspTgzE0A30eyVT7UEa1NanQPNsn0NYrLHltnT3xV8KvD
-----END PRIVATE KEY-----
`
export const TEST_TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBfTCCASSgAwIBAgIBATAKBggqhkjOPQQDAjAhMR8wHQYDVQQDDBZpbWFnZS1k
dW1wIHRlc3Qgb3JpZ2luMCAXDTAwMDEwMTAwMDAwMFoYDzIxMDAwMTAxMDAwMDAw
WjAhMR8wHQYDVQQDDBZpbWFnZS1kdW1wIHRlc3Qgb3JpZ2luMFkwEwYHKoZIzj0C
AQYIKoZIzj0DAQcDQgAEqhiLLQlMCaxuX25XjJPsXSlpJeDVg1K1512GDYX6F7KU
4MxNAN9HslU+1BGtTWp0DzbJ9DWKyx5bZ098VfCrw6NLMEkwGgYDVR0RBBMwEYcE
fwAAAYIJbG9jYWxob3N0MAwGA1UdEwEB/wQCMAAwHQYDVR0OBBYEFO2f1hBW0FGo
F7hi6cEEh3m9NKtgMAoGCCqGSM49BAMCA0cAMEQCICAEWeTTry8twb7Gb8EPdvFJ
TabbeX9lRHTZi0ePX3phAiAqwMPvqfSOEX3KYVdN4wgN5rTEzsfIFi31eF3Nie1N
5g==
-----END CERTIFICATE-----
`

export interface Origin {
  /** the address it listens on, e.g. 127.0.0.1 */
  readonly host: string
  readonly port: number
  /** `http://<host>:<port>` (https with the `tls` option) */
  readonly baseUrl: string
  /** absolute URL of a path on this origin: `origin.url('/png/1')` */
  url (path: string): string
  /** requests received since start or the last resetCounters() */
  readonly requests: number
  /** request paths (with query) in arrival order since start or the last resetCounters() */
  readonly paths: readonly string[]
  /** the headers of those requests, same order as `paths` */
  readonly requestHeaders: readonly IncomingHttpHeaders[]
  /** requests being answered right now */
  readonly inFlight: number
  /** the highest `inFlight` seen since start or the last resetCounters() */
  readonly maxInFlight: number
  /** TCP connections accepted since start or the last resetCounters() */
  readonly connections: number
  /** TCP connections open right now */
  readonly openConnections: number
  /** zero the counters (not `inFlight`/`openConnections`, which are live) and forget `-once` keys */
  resetCounters (): void
  /** resolves once `requests` reaches `count` (event-driven: use it instead of sleeping) */
  waitForRequests (count: number): Promise<void>
  /** resolves once no TCP connection to this origin is open (clients closed theirs) */
  waitForNoConnections (): Promise<void>
  /** answers the requests held on `/held/<key>/…` and every later one with that key */
  release (key: string): void
  /** serves `bytes` at `/files/<name>` from now on; returns its absolute URL */
  serve (name: string, bytes: Buffer): string
  /** stops the server, destroying open sockets and pending timers; safe to call twice */
  close (): Promise<void>
}

const PNG_SIGNATURE = makePng(0).subarray(0, 8)
const HTML = Buffer.from('<!doctype html>\n<html><head><title>Not an image</title></head><body><p>hello</p></body></html>\n')
const SVG = Buffer.from('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"><rect width="1" height="1"/></svg>\n')
// built on first use (10 MiB of zeros gzipped takes a moment); the same bytes every time
let gzipBomb: Buffer | undefined

function integer (value: string | null | undefined, fallback: number): number {
  const n = Number(value)
  return value != null && value !== '' && Number.isInteger(n) && n >= 0 ? n : fallback
}

export async function startOrigin (options: OriginOptions = {}): Promise<Origin> {
  const host = options.host ?? '127.0.0.1'
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()
  const seenKeys = new Set<string>()
  const releasedKeys = new Set<string>()
  const held = new Map<string, Set<() => void>>()
  const files = new Map<string, Buffer>()
  const idleWaiters: Array<() => void> = []
  let requestWaiters: Array<{ count: number, resolve: () => void }> = []
  let paths: string[] = []
  let requestHeaders: IncomingHttpHeaders[] = []
  let inFlight = 0
  let maxInFlight = 0
  let connections = 0
  let closing: Promise<void> | undefined

  // Timers die with the response they belong to, so close() and aborted clients leave nothing behind.
  // One 'close' listener per response, however many timers it schedules (`/slow` has 20):
  // a listener per timer would trip Node's MaxListenersExceededWarning.
  const timersOf = new WeakMap<ServerResponse, Set<NodeJS.Timeout>>()
  function later (res: ServerResponse, ms: number, fn: () => void): void {
    let own = timersOf.get(res)
    if (own === undefined) {
      const mine = new Set<NodeJS.Timeout>()
      timersOf.set(res, mine)
      res.once('close', () => {
        for (const timer of mine) { clearTimeout(timer); timers.delete(timer) }
        mine.clear()
      })
      own = mine
    }
    const timer = setTimeout(() => { timers.delete(timer); own.delete(timer); fn() }, ms)
    timers.add(timer)
    own.add(timer)
  }

  function send (res: ServerResponse, status: number, type: string, body: Buffer, headers: Record<string, string> = {}): void {
    res.writeHead(status, { 'content-type': type, 'content-length': String(body.length), ...headers })
    res.end(body)
  }

  function png (res: ServerResponse, n: number, bytes?: number): void {
    send(res, 200, 'image/png', makePng(n, bytes === undefined ? {} : { bytes }))
  }

  // Writes `chunk` until the client goes away, waiting for 'drain' so memory stays flat.
  function pump (res: ServerResponse, chunk: Buffer, remaining: number): void {
    while (remaining !== 0 && !res.destroyed) {
      const piece = remaining < 0 || remaining >= chunk.length ? chunk : chunk.subarray(0, remaining)
      if (remaining > 0) remaining -= piece.length
      if (!res.write(piece)) {
        res.once('drain', () => pump(res, chunk, remaining))
        return
      }
    }
    if (remaining === 0 && !res.destroyed) res.end()
  }

  function resetMidway (res: ServerResponse): void {
    const body = makePng(1)
    res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(body.length) })
    res.write(body.subarray(0, 16), () => res.socket?.resetAndDestroy())
  }

  function handle (req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://origin.test')
    const parts = url.pathname.split('/').filter((p) => p !== '')
    const q = url.searchParams
    const n = integer(q.get('n'), 1)
    const [route, a, b, c] = parts

    switch (route) {
      case 'png': {
        const bytes = q.has('kb') ? integer(q.get('kb'), 0) * 1024 : q.has('bytes') ? integer(q.get('bytes'), 0) : undefined
        if (!q.has('etag')) return png(res, integer(a, 1), bytes)
        const etag = `"png-${integer(a, 1)}-${bytes ?? 'plain'}"`
        if (req.headers['if-none-match'] === etag) {
          res.writeHead(304, { etag }).end()
          return
        }
        return send(res, 200, 'image/png', makePng(integer(a, 1), bytes === undefined ? {} : { bytes }), { etag })
      }
      case 'jpeg':
        return send(res, 200, 'image/jpeg', makeJpeg(integer(a, 1)))
      case 'gif':
        return send(res, 200, 'image/gif', GIF)
      case 'webp':
        return send(res, 200, 'image/webp', WEBP)
      case 'avif':
        return send(res, 200, 'image/avif', AVIF)
      case 'bmp':
        return send(res, 200, 'image/bmp', BMP)
      case 'tiff':
        return send(res, 200, 'image/tiff', TIFF)
      case 'svg':
        return send(res, 200, 'image/svg+xml', SVG)
      case 'html':
        return send(res, 200, 'text/html; charset=utf-8', HTML)
      case 'lying-png':
        return send(res, 200, 'image/png', HTML)
      case 'status': {
        const code = integer(a, 500)
        return send(res, code >= 200 && code <= 599 ? code : 500, 'text/plain', Buffer.from(`status ${code}\n`))
      }
      case 'slow': {
        const total = integer(q.get('ms'), 1000)
        const body = q.has('bytes') ? makePng(n, { bytes: integer(q.get('bytes'), 0) }) : makePng(n)
        const pieces = 20
        const size = Math.ceil(body.length / pieces)
        res.writeHead(200, q.get('length') === '1'
          ? { 'content-type': 'image/png', 'content-length': String(body.length) }
          : { 'content-type': 'image/png' })
        let i = 0
        const next = (): void => {
          res.write(body.subarray(i * size, (i + 1) * size))
          i++
          if (i * size >= body.length) res.end()
          else later(res, total / pieces, next)
        }
        return next()
      }
      case 'delay':
        // /delay/<ms>/png/<n>
        return later(res, integer(a, 100), () => png(res, b === 'png' ? integer(c, 1) : n, q.has('bytes') ? integer(q.get('bytes'), 0) : undefined))
      case 'endless':
        res.writeHead(200, { 'content-type': 'image/png' })
        res.write(PNG_SIGNATURE)
        return pump(res, Buffer.alloc(64 * 1024), -1)
      case 'big': {
        const bytes = integer(q.get('bytes'), 1024 * 1024)
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(8 + bytes) })
        res.write(PNG_SIGNATURE)
        return pump(res, Buffer.alloc(64 * 1024), bytes)
      }
      case 'redirect': {
        const k = integer(a, 0)
        if (k === 0) return png(res, n)
        res.writeHead(302, { location: `${k - 1}${url.search}`, 'content-length': '0' })
        res.end()
        return
      }
      case 'loop':
        res.writeHead(302, { location: '/loop', 'content-length': '0' })
        res.end()
        return
      case 'redirect-to': {
        const status = integer(q.get('status'), 302)
        res.writeHead(status, { location: q.get('url') ?? '/', 'content-length': '0' })
        res.end()
        return
      }
      case 'reset':
        return resetMidway(res)
      case 'reset-once':
      case '503-once':
      case '429-once': {
        const key = `${route}/${a ?? ''}`
        if (seenKeys.has(key)) return png(res, n)
        seenKeys.add(key)
        if (route === 'reset-once') return resetMidway(res)
        if (route === '503-once') return send(res, 503, 'text/plain', Buffer.from('try again\n'))
        return send(res, 429, 'text/plain', Buffer.from('slow down\n'), { 'retry-after': String(integer(q.get('after'), 1)) })
      }
      case 'gzip-bomb':
        gzipBomb ??= gzipSync(Buffer.alloc(10 * 1024 * 1024))
        return send(res, 200, 'image/png', gzipBomb, { 'content-encoding': 'gzip' })
      case 'stall':
      case 'stall-once': {
        const body = makePng(n, { bytes: integer(q.get('size'), 4096) })
        if (route === 'stall-once') {
          const key = `${route}/${a ?? ''}`
          if (seenKeys.has(key)) return send(res, 200, 'image/png', body)
          seenKeys.add(key)
        }
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(body.length) })
        // the socket stays open: only the client's deadline (or close()) ends it
        res.write(body.subarray(0, Math.min(integer(q.get('bytes'), 64), body.length - 1)))
        return
      }
      case 'held': {
        // /held/<key>/png/<n>
        const key = a ?? ''
        const answer = (): void => png(res, b === 'png' ? integer(c, 1) : n)
        if (releasedKeys.has(key)) return answer()
        const waiting = held.get(key) ?? new Set<() => void>()
        held.set(key, waiting)
        waiting.add(answer)
        res.once('close', () => waiting.delete(answer))
        return
      }
      case 'held-body': {
        const key = a ?? ''
        const body = makePng(n, { bytes: integer(q.get('bytes'), 4096) })
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(body.length) })
        const first = Math.min(integer(q.get('first'), 64), body.length - 1)
        res.write(body.subarray(0, first))
        const rest = (): void => { res.end(body.subarray(first)) }
        if (releasedKeys.has(key)) return rest()
        const waiting = held.get(key) ?? new Set<() => void>()
        held.set(key, waiting)
        waiting.add(rest)
        res.once('close', () => waiting.delete(rest))
        return
      }
      case 'files': {
        const file = files.get(decodeURIComponent(parts.slice(1).join('/')))
        if (file === undefined) return send(res, 404, 'text/plain', Buffer.from('not found\n'))
        // the type says nothing: the service decides by the bytes
        return send(res, 200, 'application/octet-stream', file)
      }
      case 'no-headers':
        return // never answer; close() destroys the socket
      case 'truncated': {
        const body = makePng(n)
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': String(body.length + 1000) })
        // Closing (FIN, not reset) once the short body is flushed: the client sees a premature end.
        res.write(body, () => res.socket?.destroySoon())
        return
      }
      default:
        return send(res, 404, 'text/plain', Buffer.from('not found\n'))
    }
  }

  const listener: RequestListener = (req, res) => {
    paths.push(req.url ?? '')
    requestHeaders.push(req.headers)
    inFlight++
    maxInFlight = Math.max(maxInFlight, inFlight)
    res.once('close', () => { inFlight-- })
    handle(req, res)
    const ready = requestWaiters.filter((w) => paths.length >= w.count)
    requestWaiters = requestWaiters.filter((w) => paths.length < w.count)
    for (const w of ready) w.resolve()
  }
  const server = options.tls === true
    ? createTlsServer({ key: TEST_TLS_KEY, cert: TEST_TLS_CERT }, listener)
    : createServer(listener)
  // Long keep-alive so a client's pooled connections are only closed by the client itself;
  // tests can then observe that a fetcher really closes its sockets.
  server.keepAliveTimeout = 60_000
  server.on('connection', (socket: Socket) => {
    connections++
    sockets.add(socket)
    socket.once('close', () => {
      sockets.delete(socket)
      if (sockets.size === 0) idleWaiters.splice(0).forEach((resolve) => resolve())
    })
  })

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  const baseUrl = `${options.tls === true ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`

  return {
    host,
    port,
    baseUrl,
    url: (path: string) => new URL(path, baseUrl).href,
    get requests () { return paths.length },
    get paths () { return paths },
    get requestHeaders () { return requestHeaders },
    get inFlight () { return inFlight },
    get maxInFlight () { return maxInFlight },
    get connections () { return connections },
    get openConnections () { return sockets.size },
    resetCounters () {
      paths = []
      requestHeaders = []
      maxInFlight = inFlight
      connections = 0
      seenKeys.clear()
      releasedKeys.clear()
    },
    waitForRequests (count: number) {
      if (paths.length >= count) return Promise.resolve()
      return new Promise<void>((resolve) => { requestWaiters.push({ count, resolve }) })
    },
    waitForNoConnections () {
      if (sockets.size === 0) return Promise.resolve()
      return new Promise<void>((resolve) => { idleWaiters.push(resolve) })
    },
    release (key: string) {
      releasedKeys.add(key)
      const waiting = held.get(key)
      held.delete(key)
      for (const answer of waiting ?? []) answer()
    },
    serve (name: string, bytes: Buffer) {
      files.set(name, bytes)
      return new URL(`/files/${encodeURIComponent(name)}`, baseUrl).href
    },
    close () {
      closing ??= new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer)
        timers.clear()
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
        server.closeAllConnections()
      })
      return closing
    }
  }
}
