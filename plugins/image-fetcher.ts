/**
 * Image fetching: downloads one image URL into the object store (lib/object-store), under
 * a key the server chose, and reports what happened as data (a FetchOutcome), never as an exception.
 *
 * `createImageFetcher(options)` is the whole feature as a plain object, usable without
 * Fastify; the default export is the Fastify plugin that decorates `fastify.imageFetcher`
 * with one and closes it with the app. Every fetcher owns its undici Agent, its byte budget
 * and its timers: two fetchers (two apps) in one process share nothing.
 *
 * It composes the parts in lib/download/, each of which documents its own decisions:
 * image-url.ts (which URLs), guarded-connector.ts (the SSRF guard), download.ts (redirects,
 * retries, the one deadline), write-image.ts (sniffing, hashing, limits, into an
 * ObjectSink), download-errors.ts (what each failure is called), byte-budget.ts and
 * reserving-writer.ts (how many downloads and how much memory), start-pacer.ts (a few
 * started per turn of the event loop), fetch-group.ts (stopping a dump's downloads
 * together); keys come from lib/storage-layout.ts.
 *
 * Memory, not a slot count, is what limits downloads in flight (`memoryBytes`): a download
 * reserves START_RESERVATION_BYTES when it leaves the queue (a request waiting for its
 * answer holds little more than its socket), then, once the headers say how large the
 * image is, its Content-Length or IMAGE_HOLD_BYTES, whichever is smaller (IMAGE_HOLD_BYTES
 * when the length is not given): the most it ever holds, since the body is written in
 * batches. Hundreds of slow or small images thus run at once, up to `concurrency`, while
 * images larger than IMAGE_HOLD_BYTES take the budget in turn. A download waiting to grow
 * reads nothing more (undici stops reading its socket once it has buffered 64 KiB) and its
 * deadline does not run meanwhile (lib/download/deadline.ts).
 *
 * Given what the same URL stored before (its validators and the object that holds its
 * bytes), a download asks the origin whether it changed: a 304 makes the image a reuse of
 * that object, by key, with nothing written; anything else is downloaded as usual. Whether
 * the object is still there when the reuse is recorded is the recording's to check
 * (db/dump-images.ts): the database orders it against a removal.
 *
 * close() aborts queued and in-flight downloads (they end as INTERRUPTED, their unfinished
 * objects aborted), then destroys the Agent. In a Fastify app it runs from onClose, after
 * the server has let in-flight requests finish. A FetchGroup does the same for the
 * downloads started with it (one dump's), and only those.
 */
import fp from 'fastify-plugin'
import { Agent } from 'undici'
import { isBlockedAddress } from '../lib/ip.js'
import { createDownloader } from '../lib/download/download.js'
import { FetchFailure, Interrupted, failure } from '../lib/download/download-errors.js'
import { createGuardedConnector } from '../lib/download/guarded-connector.js'
import { checkAddress, parseImageUrl } from '../lib/download/image-url.js'
import { createByteBudget, type Lease } from '../lib/download/byte-budget.js'
import { FetchGroup } from '../lib/download/fetch-group.js'
import { START_RESERVATION_BYTES, createReservingWriter } from '../lib/download/reserving-writer.js'
import { hasValidators, type StoredBefore, type Validators } from '../lib/download/validators.js'
import { createImageWriter } from '../lib/download/write-image.js'
import { createStartPacer } from '../lib/download/start-pacer.js'
import { UnsafeObjectKeyError } from '../lib/object-store/contract.js'
import { storeFromOptions, type StoreOptions } from '../lib/object-store/from-options.js'
import { checkStorageTarget, type StorageTarget } from '../lib/storage-layout.js'
import { nonNegativeInteger, positiveInteger } from '../lib/option-checks.js'
import type { ImageError } from '../schemas/dump.js'

export type { StoredBefore } from '../lib/download/validators.js'
export { FetchGroup } from '../lib/download/fetch-group.js'
export { IMAGE_HOLD_BYTES, START_RESERVATION_BYTES } from '../lib/download/reserving-writer.js'
export { BlockedAddressError, createGuardedConnector, createGuardedLookup } from '../lib/download/guarded-connector.js'
// for embedders: the store the options take, and the file-system one `storageDir` stands for
export { createFileStore } from '../lib/object-store/file-store.js'
export { UnsafeObjectKeyError, type ObjectStore, type ObjectSink, type ObjectInfo, type ObjectRead, type ByteRange } from '../lib/object-store/contract.js'

export interface ImageFetcherOptions extends StoreOptions {
  /** one deadline per image covering queue-exit→connect→headers→last byte, redirects and retries included */
  timeoutMs: number
  /** at most this many images in flight at once for this fetcher (waiting in the queue does not consume the deadline) */
  concurrency: number
  /**
   * bytes of responses the images in flight may hold in memory between them [DEFAULT_MEMORY_BYTES,
   * 4 MiB]: each reserves the smaller of its size and IMAGE_HOLD_BYTES; an image waits
   * (outside its deadline) until its share is free. Never too small to let one image through.
   */
  memoryBytes?: number
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

/**
 * A success says what was stored and the validators the origin sent with it (to keep for
 * the next time); `reused` when the origin answered 304 and the earlier bytes stand.
 */
export type FetchOutcome =
  // `path`: the key of the object that holds the bytes (the earlier one when reused)
  | { status: 'SUCCESS', path: string, contentType: string, bytes: number, sha256: string, width?: number, height?: number, reused?: true, validators?: Validators }
  | { status: 'FAILURE', error: ImageError }

/** A download as `observe` tells it. */
export interface DownloadObservation {
  outcome: FetchOutcome
  /** from leaving the queue to the outcome, redirects and retries included */
  seconds: number
}

/** Where an image goes: folder key `dir` (e.g. "1/42"), `name` without extension (e.g. "7"); its key is `<dir>/<name>.<ext>`. */
export type FetchTarget = StorageTarget

const DEFAULT_MAX_REDIRECTS = 5
const DEFAULT_RETRIES = 2
const DEFAULT_USER_AGENT = 'image-dump/0.1'
export const DEFAULT_MEMORY_BYTES = 4 * 1024 * 1024

const OWNER = 'image fetcher'

export function createImageFetcher (options: ImageFetcherOptions) {
  const { store, owned } = storeFromOptions(options, 'image fetcher')
  const timeoutMs = positiveInteger(OWNER, 'timeoutMs', options.timeoutMs)
  const maxImageBytes = positiveInteger(OWNER, 'maxImageBytes', options.maxImageBytes)
  const perHost = positiveInteger(OWNER, 'perHost', options.perHost)
  const maxRedirects = nonNegativeInteger(OWNER, 'maxRedirects', options.maxRedirects ?? DEFAULT_MAX_REDIRECTS)
  const retries = nonNegativeInteger(OWNER, 'retries', options.retries ?? DEFAULT_RETRIES)
  const budget = createByteBudget(
    positiveInteger(OWNER, 'memoryBytes', options.memoryBytes ?? DEFAULT_MEMORY_BYTES),
    positiveInteger(OWNER, 'concurrency', options.concurrency))
  const blocked = options.allowPrivateNetworks ? null : (options.blockedAddress ?? isBlockedAddress)

  const pacer = createStartPacer()
  // the lease of each download in flight, by its controller's signal
  const { leases, writeImage: reserveThenWrite } = createReservingWriter(createImageWriter(store, maxImageBytes), maxImageBytes)

  const agent = new Agent({
    connections: perHost,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    connect: createGuardedConnector(blocked, { timeout: timeoutMs })
  })
  const download = createDownloader({
    dispatcher: agent,
    timeoutMs,
    maxRedirects,
    retries,
    blocked,
    headers: {
      'user-agent': options.userAgent ?? DEFAULT_USER_AGENT,
      accept: 'image/avif,image/webp,image/png,image/jpeg,image/*;q=0.9,*/*;q=0.5',
      // Never decompress: what is stored and hashed is exactly what the origin sent.
      'accept-encoding': 'identity'
    },
    writeImage: reserveThenWrite
  })

  // close() sets `closing`, rejects the queue and aborts every controller in `inFlight`:
  // queued and in-flight downloads end as INTERRUPTED. A set rather than a listener per
  // image on one shared signal: a batch of thousands would make every add and remove
  // walk thousands of listeners.
  let closing = false
  const inFlight = new Set<AbortController>()
  const pending = new Set<Promise<FetchOutcome>>()
  let closed: Promise<void> | undefined

  function resolveTarget (target: FetchTarget): FetchTarget {
    try {
      return checkStorageTarget(target)
    } catch (err) {
      if (err instanceof UnsafeObjectKeyError) throw failure('IO', err.message)
      throw err
    }
  }

  const stopped = (group: FetchGroup | undefined): boolean => closing || (group?.aborted ?? false)

  const listeners = new Set<(download: DownloadObservation) => void>()

  /** A download's outcome, told to the listeners when it got as far as the network. */
  async function run (rawUrl: string, target: FetchTarget, group: FetchGroup | undefined, before: StoredBefore | undefined): Promise<FetchOutcome> {
    const timing: { startedAt?: number } = {}
    const outcome = await attempt(rawUrl, target, group, before, timing)
    if (timing.startedAt !== undefined) {
      const observation = { outcome, seconds: (performance.now() - timing.startedAt) / 1000 }
      for (const listener of listeners) listener(observation)
    }
    return outcome
  }

  /** Downloads into `target`, or (with `before`, and a 304) reuses the earlier object; throws a FetchFailure. */
  async function fetchInto (url: URL, target: FetchTarget, controller: AbortController, before: StoredBefore | undefined): Promise<FetchOutcome> {
    const asked = before !== undefined && hasValidators(before.validators) ? before : undefined
    const got = await download(url, target, controller, asked?.validators)
    if (got.notModified) {
      const { validators, objectKey, ...described } = asked!
      // a 304 may bring validators of its own (RFC 9110 §15.4.5); they replace those sent
      return { status: 'SUCCESS', ...described, path: objectKey, reused: true, validators: { ...validators, ...got.validators } }
    }
    return { status: 'SUCCESS', ...got.stored, ...(hasValidators(got.validators) ? { validators: got.validators } : {}) }
  }

  async function attempt (rawUrl: string, target: FetchTarget, group: FetchGroup | undefined, before: StoredBefore | undefined, timing: { startedAt?: number }): Promise<FetchOutcome> {
    try {
      if (closing) throw failure('INTERRUPTED', 'the image fetcher is closed')
      if (group?.aborted === true) throw failure('INTERRUPTED', 'the download was stopped before it started')
      const resolved = resolveTarget(target)
      const url = parseImageUrl(rawUrl)
      checkAddress(url, blocked)
      let lease: Lease
      try {
        lease = await budget.acquire(START_RESERVATION_BYTES)
      } catch {
        throw failure('INTERRUPTED', 'the service stopped before the download started')
      }
      // a few per turn: the first requests leave while the others are still being set up
      await pacer.turn()
      const controller = new AbortController()
      leases.set(controller.signal, lease)
      // close() or the group's abort() may have run while this waited for a slot or a turn
      if (stopped(group)) controller.abort(new Interrupted())
      else {
        inFlight.add(controller)
        group?.track(controller, true)
      }
      // from here on the time is the download's own, not the wait for a slot
      timing.startedAt = performance.now()
      try {
        return await fetchInto(url, resolved, controller, before)
      } finally {
        inFlight.delete(controller)
        group?.track(controller, false)
        lease.release()
      }
    } catch (err) {
      if (err instanceof FetchFailure) return { status: 'FAILURE', error: err.error }
      // Not expected: every path above classifies its errors. Still never reject.
      return { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'CONNECTION', message: 'download failed' } }
    }
  }

  return {
    /** where the images go */
    store,

    /**
     * Downloads `url` into the object `<target.dir>/<target.name>.<ext>`. Never rejects:
     * every failure is a FAILURE outcome with the SPEC's error shape. With a `group`, the
     * group's abort() stops it too. With `before` (what this URL stored earlier), the
     * request is conditional, and a 304 reuses the earlier object (`reused` in the outcome).
     */
    fetchImage (url: string, target: FetchTarget, group?: FetchGroup, before?: StoredBefore): Promise<FetchOutcome> {
      const outcome = run(url, target, group, before)
      pending.add(outcome)
      void outcome.finally(() => pending.delete(outcome))
      return outcome
    },

    /**
     * Calls `listener` with every download that reached the network (not those refused
     * before: an invalid URL, a blocked address literal, a stop while queued), its outcome
     * and how long it took from leaving the queue; returns the function that stops it.
     */
    observe (listener: (download: DownloadObservation) => void): () => void {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    },

    /**
     * The memory budget as it stands: the limit, what the downloads in flight reserve now
     * and the most they reserved at once, how many are in flight, and how many wait (to
     * start, or to grow once their headers said they are large).
     */
    get memory () {
      const { arrivals, growers } = budget.waiting
      return { limitBytes: budget.limitBytes, reservedBytes: budget.usedBytes, peakReservedBytes: budget.peakBytes, inFlight: budget.holders, queued: arrivals, waitingToGrow: growers }
    },

    /** Aborts queued and in-flight downloads (INTERRUPTED), waits for their cleanup, closes all connections. */
    close (): Promise<void> {
      closed ??= (async () => {
        closing = true
        budget.rejectAll(new Interrupted())
        for (const controller of inFlight) controller.abort(new Interrupted())
        await Promise.allSettled([...pending])
        await agent.destroy()
        if (owned) await store.close()
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
