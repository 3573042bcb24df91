/**
 * How a download fails: a FetchFailure carries the per-image error of the API (schemas/dump.ts)
 * and whether another attempt is worth making. Errors from undici, net, tls and the file
 * system are classified here, and only here.
 */
import type { ImageError, InternalErrorCode } from '../../schemas/dump.js'

/** A classified failure travelling up to the fetcher, which turns it into a FetchOutcome. */
export class FetchFailure extends Error {
  constructor (readonly error: ImageError, readonly retryable = false) {
    super(error.message ?? `HTTP ${error.type === 'HTTP_ERROR' ? error.httpStatus : ''}`)
  }
}

export function failure (code: InternalErrorCode, message: string, retryable = false): FetchFailure {
  return new FetchFailure({ type: 'INTERNAL_ERROR', code, message }, retryable)
}

// Abort reasons: which of the two ended a download decides INTERRUPTED vs TIMEOUT.
export class Interrupted extends Error {}
export class DeadlineExceeded extends Error {}

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

/** Turns an error from undici / net / tls into a FetchFailure (a FetchFailure passes through). */
export function classifyNetworkError (err: unknown, url: URL): FetchFailure {
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

/** True for a file-system error with this code (ENOENT, …). */
export function hasFsCode (err: unknown, code: string): boolean {
  return isFsError(err) && err.code === code
}

/** Turns a file-system error while storing an image into an IO FetchFailure naming the cause. */
export function ioFailure (err: unknown): FetchFailure {
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
