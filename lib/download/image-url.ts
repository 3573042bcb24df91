/**
 * Which URLs may be downloaded: the first one and every redirect target go through
 * parseImageUrl, then checkAddress.
 *
 * URLs with credentials (`http://user:pass@host/`) are refused as INVALID_URL rather than
 * silently stripped: sending them is out of scope and dropping them would turn a clear
 * error into a confusing 401.
 */
import net from 'node:net'
import { failure } from './download-errors.js'
import type { AddressPolicy } from './guarded-connector.js'

const MAX_URL_LENGTH = 8192

/** Parses and validates a URL to download, relative to `base` for a redirect; throws FetchFailure INVALID_URL. */
export function parseImageUrl (raw: unknown, base?: URL): URL {
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

/**
 * Refuses (FetchFailure BLOCKED_ADDRESS) a URL whose host is a blocked IP literal, before
 * any connection; names are checked when they are resolved (guarded-connector.ts).
 * `blocked` null allows everything.
 */
export function checkAddress (url: URL, blocked: AddressPolicy | null): void {
  if (blocked === null) return
  const literal = ipLiteral(url)
  if (literal !== null && blocked(literal)) throw failure('BLOCKED_ADDRESS', 'address is private or reserved')
}
