/**
 * Image fetching: downloads one image URL into the storage directory, under a name the
 * server chose, and reports what happened as data (a FetchOutcome), never as an exception.
 *
 * `createImageFetcher(options)` is the whole feature as a plain object, usable without
 * Fastify; the default export is the Fastify plugin that decorates `fastify.imageFetcher`
 * with one and closes it with the app. Every fetcher owns its undici Agent, its concurrency
 * semaphore and its timers: two fetchers (two apps) in one process share nothing.
 *
 * Decisions worth knowing:
 * - One deadline per image (`timeoutMs`) starts when the image leaves the queue and covers
 *   connecting, every redirect hop, every retry and its back-off, and the last byte. A
 *   host's own connection queue (`perHost`) is inside that deadline: it is part of being
 *   in flight.
 * - URLs with credentials (`http://user:pass@host/`) are refused as INVALID_URL rather than
 *   silently stripped: sending them is out of scope and dropping them would turn a clear
 *   error into a confusing 401.
 * - The SSRF guard (unless `allowPrivateNetworks`) checks IP literals before connecting,
 *   every address a name resolves to (in the socket's `lookup`, so the check and the
 *   connection use the same answer — no DNS-rebinding window), and the connected socket's
 *   peer address; on every redirect hop. Error messages never echo what an internal name
 *   resolved to.
 * - Retries (`retries` extra attempts, exponential back-off with jitter, only while the
 *   deadline allows): connection reset / closed mid-response, 502/503/504, and 429. A
 *   `Retry-After` of more than 5 s on those makes the status final; a shorter one is
 *   honoured. Refused connections, DNS and TLS failures, timeouts and other statuses are
 *   final at once.
 * - Bytes are written to `<name>.part`, then renamed; the temporary file is removed on
 *   every failure. Directories are created on first need and never removed (other images
 *   of the same request may be landing in them). No fsync: a crash may lose a file, never
 *   expose half of one under its final name.
 * - close() aborts queued and in-flight downloads (they end as INTERRUPTED, their
 *   temporary files removed), then destroys the Agent. In a Fastify app it runs from
 *   onClose, after the server has let in-flight requests finish.
 */
import { createHash } from 'node:crypto'
import dns from 'node:dns'
import fs, { promises as fsp } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import fp from 'fastify-plugin'
import { Agent, buildConnector, type Dispatcher } from 'undici'
import { isBlockedAddress } from '../lib/ip.js'
import { SNIFF_BYTES, sniffImageType, type SniffedType } from '../lib/sniff.js'
import type { ImageError, InternalErrorCode } from '../schemas/dump.js'

export interface ImageFetcherOptions {
  /** image root; everything is written inside it */
  storageDir: string
  /** one deadline per image covering queue-exit→connect→headers→last byte, redirects and retries included */
  timeoutMs: number
  /** at most this many images in flight at once for this fetcher (waiting in the queue does not consume the deadline) */
  concurrency: number
  /** connections per origin (undici Agent `connections`) */
  perHost: number
  /** largest image kept; enforced from Content-Length and while streaming */
  maxImageBytes: number
  /** true disables the SSRF guard (tests, local demos) */
  allowPrivateNetworks: boolean
  /** redirect hops followed per image [5] */
  maxRedirects?: number
  /** extra attempts for transient failures [2] */
  retries?: number
  /**
   * The SSRF policy: whether an address may not be connected to [isBlockedAddress: anything
   * that is not global unicast]. Operators with their own rules (e.g. also refusing a public
   * range of their own) can pass a stricter function. Ignored when allowPrivateNetworks is true.
   */
  blockedAddress?: (ip: string) => boolean
  /** User-Agent header sent to origins [image-dump/0.1] */
  userAgent?: string
}

export type FetchOutcome =
  | { status: 'SUCCESS', path: string, contentType: string, bytes: number, sha256: string }
  | { status: 'FAILURE', error: ImageError }

export interface FetchTarget {
  /** server-made directory relative to storageDir, e.g. "1/42" (userid/requestId) */
  dir: string
  /** server-made file name without extension, e.g. "7" (imageId) */
  name: string
}

const DEFAULT_MAX_REDIRECTS = 5
const DEFAULT_RETRIES = 2
const DEFAULT_USER_AGENT = 'image-dump/0.1'
const MAX_URL_LENGTH = 8192
const MAX_RETRY_AFTER_MS = 5_000
const BACKOFF_BASE_MS = 100
// Bytes read before they are written with one writev: fewer file-system calls, bounded memory per image.
const WRITE_BATCH_BYTES = 128 * 1024
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const RETRY_STATUSES = new Set([429, 502, 503, 504])
// A name is one path segment made by the server; this keeps out separators, "..", NUL and dotfiles.
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/

/** A classified failure travelling up to fetchImage, which turns it into a FetchOutcome. */
class FetchFailure extends Error {
  constructor (readonly error: ImageError, readonly retryable = false) {
    super(error.message ?? `HTTP ${error.type === 'HTTP_ERROR' ? error.httpStatus : ''}`)
  }
}

function failure (code: InternalErrorCode, message: string, retryable = false): FetchFailure {
  return new FetchFailure({ type: 'INTERNAL_ERROR', code, message }, retryable)
}

// Abort reasons: which of the two ended a download decides INTERRUPTED vs TIMEOUT.
class Interrupted extends Error {}
class DeadlineExceeded extends Error {}

/** What the guarded lookup and connector fail with; classified as BLOCKED_ADDRESS. */
export class BlockedAddressError extends Error {
  readonly code = 'ERR_BLOCKED_ADDRESS'
  constructor (message = 'address is private or reserved') {
    super(message)
  }
}

/**
 * A `net.connect` lookup that resolves every address of a name and fails with
 * BlockedAddressError if any of them is blocked, so the connection can only go to an
 * address that was checked (a name that also resolves to 10.0.0.1 is refused outright
 * rather than hoping the connection picks the public one).
 */
export function createGuardedLookup (blocked: (ip: string) => boolean): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '')
      if (addresses.length === 0 || addresses.some((a) => blocked(a.address))) {
        return callback(new BlockedAddressError('host resolves to a private or reserved address'), '')
      }
      if (options.all === true) return callback(null, addresses)
      const first = addresses[0]!
      callback(null, first.address, first.family)
    })
  }
}

/**
 * An undici connector that, on top of `buildConnector`, refuses a connected socket whose
 * peer address is blocked. This is the last line: it also covers IP literals, which never
 * go through `lookup`, should the pre-connect check ever be bypassed.
 */
export function createGuardedConnector (
  blocked: ((ip: string) => boolean) | null,
  connectOptions: buildConnector.BuildOptions
): buildConnector.connector {
  const connect = buildConnector({
    ...connectOptions,
    ...(blocked === null ? {} : { lookup: createGuardedLookup(blocked) })
  })
  if (blocked === null) return connect
  return (options, callback) => {
    connect(options, (err, socket) => {
      if (err !== null) return callback(err, null)
      const remote = socket.remoteAddress
      if (remote === undefined || blocked(remote)) {
        socket.destroy()
        return callback(new BlockedAddressError(), null)
      }
      callback(null, socket)
    })
  }
}

/** Parses and validates a URL to download; throws FetchFailure INVALID_URL. */
function parseImageUrl (raw: unknown, base?: URL): URL {
  if (typeof raw !== 'string' || raw.trim() === '') throw failure('INVALID_URL', 'URL is empty')
  if (raw.length > MAX_URL_LENGTH) throw failure('INVALID_URL', `URL is longer than ${MAX_URL_LENGTH} characters`)
  let url: URL
  try {
    url = new URL(raw, base)
  } catch {
    throw failure('INVALID_URL', base === undefined ? 'not a valid URL' : 'redirect to an invalid URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw failure('INVALID_URL', `unsupported scheme ${url.protocol} (only http and https)`)
  }
  if (url.username !== '' || url.password !== '') {
    throw failure('INVALID_URL', 'URLs with credentials are not supported')
  }
  if (url.hostname === '') throw failure('INVALID_URL', 'URL has no host')
  url.hash = ''
  return url
}

/** The address in a URL's host when it is an IP literal (WHATWG has already normalised it), else null. */
function ipLiteral (url: URL): string | null {
  const host = url.hostname
  if (host.startsWith('[') && host.endsWith(']')) return host.slice(1, -1)
  return net.isIP(host) === 0 ? null : host
}

function headerValue (value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value
}

/** Retry-After (seconds or HTTP date) in ms; null when absent or unparseable. */
function retryAfterMs (value: string | undefined): number | null {
  if (value === undefined) return null
  const trimmed = value.trim()
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000
  const date = Date.parse(trimmed)
  return Number.isNaN(date) ? null : Math.max(0, date - Date.now())
}

// Collects error codes through `cause` chains and AggregateErrors (net's happy-eyeballs
// connect reports one per address).
function errorCodes (err: unknown, depth = 0): string[] {
  if (err === null || typeof err !== 'object' || depth > 4) return []
  const e = err as { code?: unknown, cause?: unknown, errors?: unknown }
  const codes = typeof e.code === 'string' ? [e.code] : []
  codes.push(...errorCodes(e.cause, depth + 1))
  if (Array.isArray(e.errors)) for (const inner of e.errors) codes.push(...errorCodes(inner, depth + 1))
  return codes
}

const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME', 'ENODATA', 'ESERVFAIL'])
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT', 'ERR_SOCKET_CONNECTION_TIMEOUT'])
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$|ERR_OSSL_)/
const TLS_MESSAGES: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: "the origin's TLS certificate is self-signed",
  SELF_SIGNED_CERT_IN_CHAIN: "the origin's TLS certificate chain is self-signed",
  CERT_HAS_EXPIRED: "the origin's TLS certificate has expired",
  CERT_NOT_YET_VALID: "the origin's TLS certificate is not valid yet",
  ERR_TLS_CERT_ALTNAME_INVALID: "the origin's TLS certificate does not match its host name",
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: "the origin's TLS certificate could not be verified",
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: "the origin's TLS certificate is issued by an unknown authority",
  ERR_SSL_WRONG_VERSION_NUMBER: 'the origin does not speak TLS on this port'
}
// Failures after the origin accepted us, typical of an overloaded server or a stale keep-alive
// connection: worth another attempt.
const TRANSIENT_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'])
const REFUSED_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN', 'EADDRNOTAVAIL'])

/** Turns an error from undici / net / tls into a FetchFailure. */
function classifyNetworkError (err: unknown, url: URL): FetchFailure {
  if (err instanceof FetchFailure) return err
  const codes = errorCodes(err)
  const has = (set: Set<string>): boolean => codes.some((c) => set.has(c))
  if (codes.includes('ERR_BLOCKED_ADDRESS')) {
    return failure('BLOCKED_ADDRESS', err instanceof Error ? err.message : 'address is private or reserved')
  }
  if (has(DNS_CODES)) return failure('DNS', `could not resolve host ${url.hostname}`)
  if (has(TIMEOUT_CODES)) return failure('TIMEOUT', 'the origin did not answer in time')
  const tls = codes.find((c) => TLS_CODE.test(c))
  if (tls !== undefined) return failure('TLS', TLS_MESSAGES[tls] ?? `TLS handshake failed (${tls})`)
  if (codes.includes('EPROTO')) return failure('TLS', 'TLS handshake failed')
  if (codes.includes('ECONNRESET')) return failure('CONNECTION', 'connection reset by the origin', true)
  if (has(TRANSIENT_CODES)) return failure('CONNECTION', 'connection closed before the response was complete', true)
  if (codes.includes('ECONNREFUSED')) return failure('CONNECTION', 'connection refused')
  if (has(REFUSED_CODES)) return failure('CONNECTION', 'origin unreachable')
  return failure('CONNECTION', 'download failed')
}

function isFsError (err: unknown): err is NodeJS.ErrnoException {
  return err instanceof Error && typeof (err as NodeJS.ErrnoException).code === 'string'
}

function ioFailure (err: unknown): FetchFailure {
  const code = isFsError(err) ? err.code : undefined
  const reason = code === 'ENOSPC'
    ? 'no space left on the storage device'
    : code === 'EACCES' || code === 'EPERM'
      ? 'permission denied in the storage directory'
      : code === 'EROFS'
        ? 'the storage directory is read-only'
        : `could not write the image${code === undefined ? '' : ` (${code})`}`
  return failure('IO', reason)
}

/**
 * The few file-system calls of the hot path, over the callback API: no FileHandle object
 * and no promise-backed request per call, which used less CPU per image in most of our
 * measurements (bench/micro/fs-calls.ts, BENCHMARKS.md). A descriptor is a plain number
 * here, so save() takes care to close it exactly once.
 */
function openForWrite (file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'w', (err, fd) => { if (err === null) resolve(fd); else reject(err) }))
}
function writevFile (fd: number, chunks: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, chunks, (err, written) => { if (err === null) resolve(written); else reject(err) }))
}
function writeFile (fd: number, chunk: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, chunk, (err, written) => { if (err === null) resolve(written); else reject(err) }))
}
function closeFile (fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => { if (err === null || err === undefined) resolve(); else reject(err) }))
}
function renameFile (from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => fs.rename(from, to, (err) => { if (err === null) resolve(); else reject(err) }))
}

/** A counting semaphore; close() empties its queue at once with rejectAll. */
function createSemaphore (limit: number) {
  let active = 0
  // waiters[head..] wait in order; the slot is handed over directly, so `active` does not change
  let waiters: Array<{ resolve: () => void, reject: (reason: unknown) => void }> = []
  let head = 0
  return {
    acquire (): Promise<void> {
      if (active < limit) {
        active++
        return Promise.resolve()
      }
      return new Promise<void>((resolve, reject) => { waiters.push({ resolve, reject }) })
    },
    release (): void {
      if (head < waiters.length) {
        const next = waiters[head]!
        waiters[head++] = undefined!
        if (head === waiters.length) {
          waiters = []
          head = 0
        }
        next.resolve()
      } else {
        active--
      }
    },
    /** Rejects every waiter (close()); one call instead of a listener per queued image. */
    rejectAll (reason: unknown): void {
      const queued = waiters.slice(head)
      waiters = []
      head = 0
      for (const waiter of queued) waiter.reject(reason)
    }
  }
}

function positiveInteger (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new TypeError(`image fetcher: ${name} must be a positive integer, got ${String(value)}`)
  }
  return value
}

function nonNegativeInteger (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
    throw new TypeError(`image fetcher: ${name} must be a non-negative integer, got ${String(value)}`)
  }
  return value
}

export function createImageFetcher (options: ImageFetcherOptions) {
  if (typeof options.storageDir !== 'string' || options.storageDir === '') {
    throw new TypeError('image fetcher: storageDir must be a non-empty path')
  }
  const root = path.resolve(options.storageDir)
  const timeoutMs = positiveInteger('timeoutMs', options.timeoutMs)
  const maxImageBytes = positiveInteger('maxImageBytes', options.maxImageBytes)
  const perHost = positiveInteger('perHost', options.perHost)
  const maxRedirects = nonNegativeInteger('maxRedirects', options.maxRedirects ?? DEFAULT_MAX_REDIRECTS)
  const retries = nonNegativeInteger('retries', options.retries ?? DEFAULT_RETRIES)
  const semaphore = createSemaphore(positiveInteger('concurrency', options.concurrency))
  const blocked = options.allowPrivateNetworks ? null : (options.blockedAddress ?? isBlockedAddress)
  const requestHeaders = {
    'user-agent': options.userAgent ?? DEFAULT_USER_AGENT,
    accept: 'image/avif,image/webp,image/png,image/jpeg,image/*;q=0.9,*/*;q=0.5',
    // Never decompress: what is stored and hashed is exactly what the origin sent.
    'accept-encoding': 'identity'
  }

  const agent = new Agent({
    connections: perHost,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    connect: createGuardedConnector(blocked, { timeout: timeoutMs })
  })

  // close() sets `closing`, rejects the queue and aborts every controller in `inFlight`:
  // queued and in-flight downloads end as INTERRUPTED. A set rather than a listener per
  // image on one shared signal: a batch of thousands would make every add and remove
  // walk thousands of listeners.
  let closing = false
  const inFlight = new Set<AbortController>()
  const pending = new Set<Promise<FetchOutcome>>()
  let closed: Promise<void> | undefined

  function resolveTarget (target: FetchTarget): { dirAbs: string, rel: string, name: string } {
    if (target === null || typeof target !== 'object' || typeof target.dir !== 'string' || typeof target.name !== 'string') {
      throw failure('IO', 'invalid storage target')
    }
    if (!SAFE_NAME.test(target.name)) throw failure('IO', 'invalid storage file name')
    if (target.dir.includes('\0')) throw failure('IO', 'invalid storage directory')
    const dirAbs = path.resolve(root, target.dir)
    const rel = path.relative(root, dirAbs)
    if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
      throw failure('IO', 'storage target is outside the storage directory')
    }
    return { dirAbs, rel: rel.split(path.sep).join('/'), name: target.name }
  }

  function checkAddress (url: URL): void {
    if (blocked === null) return
    const literal = ipLiteral(url)
    if (literal !== null && blocked(literal)) throw failure('BLOCKED_ADDRESS', 'address is private or reserved')
  }

  // Directories this fetcher has made (or found) already, so a batch of thousands of images
  // into one folder costs one mkdir rather than a failed open per image. Bounded: past
  // the cap the oldest entries are forgotten, which only costs another mkdir.
  const knownDirs = new Map<string, Promise<void>>()
  const KNOWN_DIRS_CAP = 1024

  function ensureDir (dir: string): Promise<void> {
    let made = knownDirs.get(dir)
    if (made === undefined) {
      made = fsp.mkdir(dir, { recursive: true }).then(() => {})
      knownDirs.set(dir, made)
      made.catch(() => knownDirs.delete(dir))
      if (knownDirs.size > KNOWN_DIRS_CAP) knownDirs.delete(knownDirs.keys().next().value!)
    }
    return made
  }

  async function openPart (file: string, dir: string): Promise<number> {
    await ensureDir(dir)
    try {
      return await openForWrite(file)
    } catch (err) {
      if (!isFsError(err) || err.code !== 'ENOENT') throw err
    }
    // The directory went away after it was made (removed by hand, say): make it again.
    knownDirs.delete(dir)
    await ensureDir(dir)
    return await openForWrite(file)
  }

  /** Writes every byte of `chunks` (one writev; a short write, rare on files, is finished with write). */
  async function writeAll (fd: number, chunks: Buffer[], length: number): Promise<void> {
    let written = await writevFile(fd, chunks)
    while (written < length) {
      const bytesWritten = await writeFile(fd, Buffer.concat(chunks).subarray(written))
      if (bytesWritten === 0) throw Object.assign(new Error('short write'), { code: 'EIO' })
      written += bytesWritten
    }
  }

  /** Stops reading a response; the connection is closed rather than drained. */
  function abandon (body: Dispatcher.ResponseData['body']): void {
    // destroying an unfinished undici body emits an abort error nobody else is listening for
    body.on('error', () => {})
    body.destroy()
  }

  /**
   * Streams a 2xx body to `<name>.part`, then renames it to `<name>.<ext>`.
   *
   * Just enough is read to decide the type before the disk is touched; the `.part` file is
   * then opened while reading goes on, and what arrived is written in batches of up to
   * WRITE_BATCH_BYTES with one writev each. A small image thus costs four file-system
   * calls (open, writev, close, rename) and no stream machinery; memory per image in
   * flight stays bounded by the batch size.
   */
  async function save (
    res: Dispatcher.ResponseData,
    target: { dirAbs: string, rel: string, name: string },
    signal: AbortSignal
  ): Promise<FetchOutcome> {
    const body = res.body
    const declared = Number(headerValue(res.headers['content-length']))
    if (Number.isFinite(declared) && declared > maxImageBytes) {
      abandon(body)
      throw failure('TOO_LARGE', `image is larger than ${maxImageBytes} bytes`)
    }

    const hash = createHash('sha256')
    const partFile = path.join(target.dirAbs, `${target.name}.part`)
    let bytes = 0
    let batch: Buffer[] = []
    let batchBytes = 0
    let type: SniffedType | undefined
    let opening: Promise<number> | undefined
    let fd: number | undefined
    // a descriptor number is reused as soon as it is closed: never close it twice
    let fdClosed = false

    const sniff = (): SniffedType => {
      const found = sniffImageType(batch.length === 1 ? batch[0]! : Buffer.concat(batch))
      if (found === null) throw failure('NOT_AN_IMAGE', bytes === 0 ? 'the response body is empty' : 'the response is not a supported image')
      return found
    }
    const file = async (): Promise<number> => {
      try {
        fd ??= await opening!
        return fd
      } catch (err) {
        throw ioFailure(err)
      }
    }
    const flush = async (): Promise<void> => {
      const open = await file()
      try {
        await writeAll(open, batch, batchBytes)
      } catch (err) {
        throw ioFailure(err)
      }
      batch = []
      batchBytes = 0
    }

    try {
      // for-await destroys the body when the loop is left by an exception
      for await (const chunk of body as AsyncIterable<Buffer>) {
        bytes += chunk.length
        if (bytes > maxImageBytes) throw failure('TOO_LARGE', `image is larger than ${maxImageBytes} bytes`)
        hash.update(chunk)
        batch.push(chunk)
        batchBytes += chunk.length
        if (type === undefined) {
          if (batchBytes < SNIFF_BYTES) continue
          type = sniff()
          opening = openPart(partFile, target.dirAbs)
          // awaited later; until then a failure must not count as unhandled
          opening.catch(() => {})
        }
        if (batchBytes >= WRITE_BATCH_BYTES) await flush()
      }
      if (type === undefined) {
        type = sniff()
        opening = openPart(partFile, target.dirAbs)
      }
      if (batchBytes > 0) await flush()
      const fileName = `${target.name}.${type.ext}`
      try {
        const open = await file()
        fdClosed = true
        await closeFile(open)
        // the deadline or close() may have struck while the last bytes were being written
        if (signal.aborted) throw signal.reason
        await renameFile(partFile, path.join(target.dirAbs, fileName))
      } catch (err) {
        if (signal.aborted || err instanceof FetchFailure) throw err
        throw ioFailure(err)
      }
      return {
        status: 'SUCCESS',
        path: target.rel === '' ? fileName : `${target.rel}/${fileName}`,
        contentType: type.contentType,
        bytes,
        sha256: hash.digest('hex')
      }
    } catch (err) {
      abandon(body)
      if (opening !== undefined) {
        const open = fd ?? await opening.catch(() => undefined)
        if (open !== undefined && !fdClosed) await closeFile(open).catch(() => {})
        await fsp.rm(partFile, { force: true }).catch(() => {})
      }
      throw err
    }
  }

  async function discard (body: Dispatcher.ResponseData['body']): Promise<void> {
    // Reading a small error body lets the connection be reused; a large one is cut off.
    await body.dump({ limit: 64 * 1024 }).catch(() => {})
  }

  /** The download proper, inside one deadline: redirects, retries, streaming to disk. */
  async function download (first: URL, target: { dirAbs: string, rel: string, name: string }): Promise<FetchOutcome> {
    const controller = new AbortController()
    const { signal } = controller
    const deadline = performance.now() + timeoutMs
    const timer = setTimeout(() => controller.abort(new DeadlineExceeded()), timeoutMs)
    // close() may have run between the semaphore granting the slot and now
    if (closing) controller.abort(new Interrupted())
    else inFlight.add(controller)

    let url = first
    let redirects = 0
    let attempt = 0
    const visited = new Set([url.href])

    // Waits before another attempt, or says no when the deadline would not allow it.
    const mayRetry = async (minDelayMs = 0): Promise<boolean> => {
      if (attempt >= retries) return false
      const backoff = BACKOFF_BASE_MS * 2 ** attempt + Math.random() * BACKOFF_BASE_MS
      const delay = Math.max(minDelayMs, backoff)
      if (performance.now() + delay >= deadline) return false
      attempt++
      await sleep(delay, undefined, { signal })
      return true
    }

    try {
      for (;;) {
        let res: Dispatcher.ResponseData
        try {
          res = await agent.request({
            origin: url.origin,
            path: `${url.pathname}${url.search}`,
            method: 'GET',
            headers: requestHeaders,
            signal
          })
        } catch (err) {
          if (signal.aborted) throw err
          const f = classifyNetworkError(err, url)
          if (f.retryable && await mayRetry()) continue
          throw f
        }

        const status = res.statusCode
        const location = headerValue(res.headers.location)
        if (REDIRECT_STATUSES.has(status) && location !== undefined) {
          await discard(res.body)
          redirects++
          if (redirects > maxRedirects) throw failure('TOO_MANY_REDIRECTS', `more than ${maxRedirects} redirects`)
          const next = parseImageUrl(location, url)
          if (visited.has(next.href)) throw failure('TOO_MANY_REDIRECTS', 'redirect loop')
          visited.add(next.href)
          checkAddress(next)
          url = next
          continue
        }

        if (status < 200 || status > 299) {
          await discard(res.body)
          if (RETRY_STATUSES.has(status)) {
            const after = retryAfterMs(headerValue(res.headers['retry-after']))
            if ((after === null || after <= MAX_RETRY_AFTER_MS) && await mayRetry(after ?? 0)) continue
          }
          throw new FetchFailure({ type: 'HTTP_ERROR', httpStatus: status })
        }

        try {
          return await save(res, target, signal)
        } catch (err) {
          if (signal.aborted || err instanceof FetchFailure) throw err
          const f = classifyNetworkError(err, url)
          if (f.retryable && await mayRetry()) continue
          throw f
        }
      }
    } catch (err) {
      if (signal.aborted && !(err instanceof FetchFailure)) {
        throw signal.reason instanceof Interrupted
          ? failure('INTERRUPTED', 'the service stopped before the download finished')
          : failure('TIMEOUT', `the download did not finish within ${timeoutMs} ms`)
      }
      throw classifyNetworkError(err, url)
    } finally {
      clearTimeout(timer)
      inFlight.delete(controller)
    }
  }

  async function run (rawUrl: string, target: FetchTarget): Promise<FetchOutcome> {
    try {
      if (closing) throw failure('INTERRUPTED', 'the image fetcher is closed')
      const resolved = resolveTarget(target)
      const url = parseImageUrl(rawUrl)
      checkAddress(url)
      try {
        await semaphore.acquire()
      } catch {
        throw failure('INTERRUPTED', 'the service stopped before the download started')
      }
      try {
        return await download(url, resolved)
      } finally {
        semaphore.release()
      }
    } catch (err) {
      if (err instanceof FetchFailure) return { status: 'FAILURE', error: err.error }
      // Not expected: every path above classifies its errors. Still never reject.
      return { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'CONNECTION', message: 'download failed' } }
    }
  }

  return {
    /**
     * Downloads `url` to `<storageDir>/<target.dir>/<target.name>.<ext>`. Never rejects:
     * every failure is a FAILURE outcome with the SPEC's error shape.
     */
    fetchImage (url: string, target: FetchTarget): Promise<FetchOutcome> {
      const outcome = run(url, target)
      pending.add(outcome)
      void outcome.finally(() => pending.delete(outcome))
      return outcome
    },

    /** Aborts queued and in-flight downloads (INTERRUPTED), waits for their cleanup, closes all connections. */
    close (): Promise<void> {
      closed ??= (async () => {
        closing = true
        semaphore.rejectAll(new Interrupted())
        for (const controller of inFlight) controller.abort(new Interrupted())
        await Promise.allSettled([...pending])
        await agent.destroy()
      })()
      return closed
    }
  }
}

export type ImageFetcher = ReturnType<typeof createImageFetcher>

declare module 'fastify' {
  interface FastifyInstance {
    imageFetcher: ImageFetcher
  }
}

export default fp(async (fastify, opts: ImageFetcherOptions) => {
  const fetcher = createImageFetcher(opts)
  fastify.decorate('imageFetcher', fetcher)
  fastify.addHook('onClose', () => fetcher.close())
}, { name: 'image-fetcher', fastify: '5.x' })
