/**
 * One image's download, from its first URL to its stored file: redirects, retries and
 * streaming to disk, inside one deadline.
 *
 * - One deadline per image (`timeoutMs`) starts when the image leaves the queue and covers
 *   connecting, every redirect hop, every retry and its back-off, and the last byte. A
 *   host's own connection queue (`perHost`) is inside that deadline: it is part of being
 *   in flight.
 * - Every redirect target goes through the same URL policy and address check as the first
 *   URL (image-url.ts) before it is requested; the connector checks what names resolve to.
 * - Retries (`retries` extra attempts, exponential back-off with jitter, only while the
 *   deadline allows): connection reset / closed mid-response, 502/503/504, and 429. A
 *   `Retry-After` of more than 5 s on those makes the status final; a shorter one is
 *   honoured. Refused connections, DNS and TLS failures, timeouts and other statuses are
 *   final at once.
 * - Revalidation: given the validators of bytes stored before, every request (each redirect
 *   hop too: the validators belong to the URL as listed, whichever hop answers for it)
 *   carries If-None-Match / If-Modified-Since, and a 304 is the answer "not modified":
 *   nothing is written. A 304 to a request that carried no validators is an HTTP_ERROR.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Dispatcher } from 'undici'
import type { StorageTarget } from '../storage-layout.js'
import { startDeadline, type Deadline } from './deadline.js'
import { DeadlineExceeded, FetchFailure, Interrupted, classifyNetworkError, failure } from './download-errors.js'
import type { AddressPolicy } from './guarded-connector.js'
import { checkAddress, parseImageUrl } from './image-url.js'
import { conditionalHeaders, hasValidators, validatorsOf, type Validators } from './validators.js'
import type { ImageWriter, ResponseBody, StoredImage } from './write-image.js'

const MAX_RETRY_AFTER_MS = 5_000
const BACKOFF_BASE_MS = 100
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const RETRY_STATUSES = new Set([429, 502, 503, 504])

/** A download's result: the stored image, or (only when asked with validators) "not modified"; each with the response's validators. */
export type Downloaded =
  | { notModified: false, stored: StoredImage, validators: Validators }
  | { notModified: true, validators: Validators }

export interface DownloadOptions {
  /** the fetcher's undici Agent, with the guarded connector */
  dispatcher: Dispatcher
  timeoutMs: number
  maxRedirects: number
  retries: number
  /** sent with every request */
  headers: Record<string, string>
  /** the SSRF policy for redirect targets; null allows every address */
  blocked: AddressPolicy | null
  /** stores a 2xx body; `deadline` is the download's, for a writer that must wait for memory */
  writeImage: (...args: [...Parameters<ImageWriter>, deadline: Deadline]) => Promise<StoredImage>
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

async function discard (body: ResponseBody): Promise<void> {
  // Reading a small error body lets the connection be reused; a large one is cut off.
  await body.dump({ limit: 64 * 1024 }).catch(() => {})
}

/*
 * The redirect and retry loop is written by hand rather than with undici's redirect and
 * retry interceptors: the redirect interceptor follows a Location without our URL policy or
 * the pre-connect check of IP literals (a redirect to 10.0.0.1 would be connected to before
 * the connector refused it), and at its hop limit hands back the 3xx instead of failing;
 * the retry interceptor waits by its own back-off whatever is left of the deadline, caps a
 * long Retry-After instead of giving up on it, and resumes a cut body with a Range request,
 * splicing bytes of what may be another representation into the file and its digest.
 */
export function createDownloader (options: DownloadOptions) {
  const { dispatcher, timeoutMs, maxRedirects, retries, headers, blocked, writeImage } = options

  /**
   * Downloads `first` into `target`. `controller` is the caller's: aborting it with an
   * Interrupted reason stops the download as INTERRUPTED; the deadline aborts it with
   * DeadlineExceeded (TIMEOUT). With `validators` (of bytes stored before), a
   * 304 resolves as not modified. Throws a FetchFailure on every failure.
   */
  return async function download (first: URL, target: StorageTarget, controller: AbortController, validators?: Validators): Promise<Downloaded> {
    const { signal } = controller
    // a 304 is "not modified" only when the request asked with validators
    const conditional = hasValidators(validators)
    const requestHeaders = conditional ? { ...headers, ...conditionalHeaders(validators) } : headers
    const deadline = startDeadline(timeoutMs, () => controller.abort(new DeadlineExceeded()))

    let url = first
    let redirects = 0
    let attempt = 0
    const visited = new Set([url.href])

    // Waits before another attempt, or says no when the deadline would not allow it.
    const mayRetry = async (minDelayMs = 0): Promise<boolean> => {
      if (attempt >= retries) return false
      const backoff = BACKOFF_BASE_MS * 2 ** attempt + Math.random() * BACKOFF_BASE_MS
      const delay = Math.max(minDelayMs, backoff)
      if (delay >= deadline.left()) return false
      attempt++
      await sleep(delay, undefined, { signal })
      return true
    }

    try {
      for (;;) {
        let res: Dispatcher.ResponseData
        try {
          res = await dispatcher.request({
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
          checkAddress(next, blocked)
          url = next
          continue
        }

        if (status === 304 && conditional) {
          await discard(res.body)
          return { notModified: true, validators: validatorsOf(res.headers) }
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
          const stored = await writeImage(res.body, Number(headerValue(res.headers['content-length'])), target, signal, deadline)
          return { notModified: false, stored, validators: validatorsOf(res.headers) }
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
      deadline.clear()
    }
  }
}

export type Download = ReturnType<typeof createDownloader>
