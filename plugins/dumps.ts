import { setTimeout as sleep } from 'node:timers/promises'
import fp from 'fastify-plugin'
import { XMLParser } from 'fast-xml-parser'
import type { FastifyInstance } from 'fastify'
import { createRequests } from '../db/requests.js'
import { createServiceError } from '../lib/errors.js'
import { createStorageLayout } from '../lib/storage-layout.js'
import { serializeDocument } from './content-negotiation/xml-writer.js'
import type { Batch, BodyFormat } from '../schemas/batch.js'
import type { DumpResult, ImageResult, ItemResult } from '../schemas/dump.js'
import type { FetchOutcome } from './image-fetcher.js'
import type { QuotaRecord } from './quota.js'
import type { Principal } from './auth.js'

export interface DumpsOptions {
  /** image root; the same folder the image fetcher writes to */
  storageDir: string
  /** how often an instance marks the dumps it is processing as alive (default a quarter of staleAfterMs, at most 15 s) */
  heartbeatMs?: number
  /**
   * An incomplete row whose heartbeat is older than this is taken as left behind by a
   * crash and completed as interrupted, at start and by a sweep that runs as often (at
   * least every 60 s). 0 recovers every incomplete row at start, right for the embedded
   * database, which one process owns; its sweep then waits for 60 s (default 60 s).
   */
  staleAfterMs?: number
}

/** The answer to a dump whose outcome could not be recorded; its images were discarded. */
export class DumpNotRecordedError extends createServiceError('DUMP_NOT_RECORDED', 503, 'the outcome of this dump could not be recorded; its images were discarded; send it again') {}

type Status = DumpResult['status']

/** SUCCESS when every image succeeded, FAILURE when none did, PARTIAL in between. */
export function statusOf (images: ReadonlyArray<{ status: string }>): Status {
  const ok = images.filter((image) => image.status === 'SUCCESS').length
  if (images.some((image) => image.status === 'PENDING')) return 'PENDING'
  if (ok === images.length) return 'SUCCESS'
  return ok === 0 ? 'FAILURE' : 'PARTIAL'
}

/** Numbers the items (1..n) and the images over the whole request (1..m), in order. */
export function numberBatch (batch: Batch): ItemResult[] {
  let imageId = 0
  return batch.items.map((item, index) => ({
    itemId: index + 1,
    name: item.name,
    ...(item.manufacturer === undefined ? {} : { manufacturer: item.manufacturer }),
    ...(item.brand === undefined ? {} : { brand: item.brand }),
    ...(item.category === undefined ? {} : { category: item.category }),
    processStatus: 'PENDING',
    images: item.images.map((url) => ({ imageId: ++imageId, url, status: 'PENDING' }))
  }))
}

export function imageResult (requestId: number, image: ImageResult, outcome: FetchOutcome): ImageResult {
  if (outcome.status === 'FAILURE') return { imageId: image.imageId, url: image.url, status: 'FAILURE', error: outcome.error }
  return {
    imageId: image.imageId,
    url: image.url,
    status: 'SUCCESS',
    location: `/v1/dumps/${requestId}/images/${image.imageId}`,
    contentType: outcome.contentType,
    bytes: outcome.bytes,
    sha256: outcome.sha256
  }
}

/** Gives every image without an outcome the INTERRUPTED failure and recomputes the statuses. */
export function interrupt (items: ItemResult[]): { items: ItemResult[], interrupted: number[] } {
  const interrupted: number[] = []
  const completed = items.map((item) => {
    const images = item.images.map((image): ImageResult => {
      if (image.status !== 'PENDING') return image
      interrupted.push(Number(image.imageId))
      return {
        imageId: image.imageId,
        url: image.url,
        status: 'FAILURE',
        error: { type: 'INTERNAL_ERROR' as const, code: 'INTERRUPTED' as const, message: 'the service stopped before this image had an outcome' }
      }
    })
    return { ...item, images, processStatus: statusOf(images) }
  })
  return { items: completed, interrupted }
}

const asArray = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value])

/** Reads a stored record back into its items, from either format. */
export function readRecord (data: Buffer, format: BodyFormat): ItemResult[] {
  if (format === 'json') return (JSON.parse(data.toString('utf8')) as { items: ItemResult[] }).items
  const parser = new XMLParser({ parseTagValue: false, processEntities: true, htmlEntities: false, ignoreAttributes: true, ignoreDeclaration: true })
  // A stored record was written by this service, but parse it as defensively as any XML.
  const doc = parser.parse(data.toString('utf8')) as { result?: { items?: { item?: unknown } } }
  return asArray(doc.result?.items?.item as ItemResult | ItemResult[] | undefined).map((item) => ({
    ...item,
    itemId: Number(item.itemId),
    images: asArray((item.images as unknown as { image?: ImageResult | ImageResult[] } | undefined)?.image)
      .map((image) => ({ ...image, imageId: Number(image.imageId) }))
  }))
}

export function createDumpsService (fastify: FastifyInstance, options: DumpsOptions) {
  const requests = createRequests(fastify.persistence.db, fastify.persistence.engine)
  const storage = createStorageLayout(options.storageDir)
  const staleAfterMs = options.staleAfterMs ?? 60_000
  // ids of the rows this instance is processing right now, for the heartbeat
  const active = new Set<number>()
  // dumps that run on after their request was answered; the app's close waits for them
  const background = new Set<Promise<void>>()

  /**
   * Records the outcome of a dump, or says why it could not: 'unreachable' when the
   * database kept failing, 'taken' when the row was completed meanwhile by a recovery
   * (another instance found its heartbeat stale, e.g. while this one could not reach the
   * database), whose INTERRUPTED record then stands.
   */
  async function write (requestId: number, data: Buffer): Promise<'written' | 'unreachable' | 'taken'> {
    // The outcome is already on disk; a brief database hiccup must not lose its record.
    for (let attempt = 1; ; attempt++) {
      try {
        return await requests.complete(requestId, data)
      } catch (error) {
        if (attempt >= 4) {
          fastify.log.error({ err: error, requestId }, 'the outcome of a dump could not be recorded')
          return 'unreachable'
        }
        await sleep(100 * 2 ** attempt)
      }
    }
  }

  return {
    /** The folder the files `image` names are relative to. */
    storageRoot: storage.root,

    /** The log row written at admission: the batch numbered, every image PENDING. */
    admissionRecord (batch: Batch, format: BodyFormat): QuotaRecord {
      const pending = { status: 'PENDING', items: numberBatch(batch) }
      return { dataformat: format, data: Buffer.from(serializeDocument(pending, format, 'result')) }
    },

    /** Downloads every image of an admitted dump, records the outcome and returns it. */
    async process (principal: Principal, requestId: number, batch: Batch, format: BodyFormat): Promise<DumpResult> {
      active.add(requestId)
      try {
        const items = numberBatch(batch)
        const done = await Promise.all(items.map(async (item) => {
          const images = await Promise.all(item.images.map(async (image) =>
            imageResult(requestId, image, await fastify.imageFetcher.fetchImage(image.url, storage.dumpTarget(principal.userid, requestId, image.imageId)))))
          return { ...item, images, processStatus: statusOf(images) }
        }))
        const result: DumpResult = { requestId, status: statusOf(done.flatMap((item) => item.images)), items: done }
        const written = await write(requestId, Buffer.from(serializeDocument(result, format, 'result')))
        if (written === 'written') return result
        // The record will say (or already says) INTERRUPTED: the files must not outlive it,
        // or an image could be served for a dump whose record denies it.
        await storage.removeDump(principal.userid, requestId)
        throw written === 'unreachable'
          ? new DumpNotRecordedError(`dump ${requestId}: the database could not be reached to record its outcome`, {
            publicMessage: `the images of dump ${requestId} were downloaded but the database could not be reached to record them; they were discarded and the dump will be marked as interrupted; send it again`
          })
          : new DumpNotRecordedError(`dump ${requestId}: completed as interrupted by a recovery while it was processed`, {
            publicMessage: `dump ${requestId} was marked as interrupted while its images were downloading (its progress could not be recorded in time); its images were discarded; send it again`
          })
      } finally {
        active.delete(requestId)
      }
    },

    /** The logged record of one of the user's dumps, as stored. */
    async find (userid: number, requestId: number): Promise<{ format: BodyFormat, data: Buffer, complete: boolean } | undefined> {
      return await requests.find(userid, requestId)
    },

    /** The stored file of one image of one of the user's dumps, relative to storageRoot, and its type. */
    async image (userid: number, requestId: number, imageId: number): Promise<{ file: string, contentType: string } | undefined> {
      return await storage.findImage(userid, requestId, imageId)
    },

    /**
     * Completes rows left incomplete by a crash: images without an outcome become
     * INTERRUPTED failures, their files (temporary or not) are removed, and the row is
     * marked complete. Returns how many rows were completed.
     */
    async recoverInterrupted (olderThanMs = staleAfterMs): Promise<number> {
      const rows = await requests.stale(olderThanMs)
      let completed = 0
      for (const row of rows) {
        if (active.has(row.id)) continue
        const { items, interrupted } = interrupt(row.data === null ? [] : readRecord(Buffer.from(row.data), row.dataformat))
        if (!await storage.removeInterrupted(row.userid, row.id, interrupted)) continue
        const result = { requestId: row.id, status: statusOf(items.flatMap((item) => item.images)), items }
        // only rows still incomplete: another instance may have finished or recovered it meanwhile
        if (await requests.completeIfIncomplete(row.id, Buffer.from(serializeDocument(result, row.dataformat, 'result')))) completed++
      }
      return completed
    },

    /**
     * Lets a dump (a `process` promise) run on after its request was answered: a failure
     * is logged, never left unhandled, and the app's close waits for it, as it waits for a
     * request in flight, before the image fetcher closes.
     */
    runInBackground (work: Promise<unknown>, context: Record<string, unknown> = {}): void {
      const tracked = work.then(() => {}, (error: unknown) => {
        fastify.log.error({ err: error, ...context }, 'a dump running in the background failed')
      })
      background.add(tracked)
      void tracked.then(() => background.delete(tracked))
    },

    /** How many dumps run in the background right now. */
    inBackground (): number {
      return background.size
    },

    /** Resolves once no dump runs in the background. */
    async backgroundSettled (): Promise<void> {
      while (background.size > 0) await Promise.all([...background])
    },

    /** Marks this instance's dumps in progress as alive. */
    async heartbeat (): Promise<void> {
      await requests.heartbeat([...active])
    }
  }
}

export type DumpsService = ReturnType<typeof createDumpsService>

declare module 'fastify' {
  interface FastifyInstance {
    dumps: DumpsService
  }
}

async function dumps (fastify: FastifyInstance, options: DumpsOptions): Promise<void> {
  const service = createDumpsService(fastify, options)
  fastify.decorate('dumps', service)

  const recovered = await service.recoverInterrupted()
  if (recovered > 0) fastify.log.warn({ recovered }, 'completed dumps interrupted by a previous stop')

  const staleAfterMs = options.staleAfterMs ?? 60_000
  // While running, a row always needs a stale heartbeat: with 0, a dump admitted but not
  // yet being processed would look abandoned.
  const sweepAfterMs = staleAfterMs > 0 ? staleAfterMs : 60_000
  // several heartbeats per threshold, so one slow database round trip does not make a live dump look abandoned
  const heartbeatMs = options.heartbeatMs ?? Math.min(15_000, Math.max(1, Math.floor(sweepAfterMs / 4)))
  const logFailure = (what: string) => (error: unknown) => { fastify.log.error({ err: error }, what) }
  const heartbeat = setInterval(() => { service.heartbeat().catch(logFailure('dump heartbeat failed')) }, heartbeatMs)
  const sweep = setInterval(() => {
    service.recoverInterrupted(sweepAfterMs).then((count) => {
      if (count > 0) fastify.log.warn({ recovered: count }, 'completed dumps interrupted by a stop or a database outage')
    }, logFailure('recovery sweep failed'))
  }, Math.min(60_000, sweepAfterMs))
  heartbeat.unref()
  sweep.unref()
  // registered after the image fetcher, so this runs before it closes (onClose runs last-in first)
  fastify.addHook('onClose', async () => {
    if (service.inBackground() > 0) fastify.log.info({ dumps: service.inBackground() }, 'closing: waiting for the dumps running in the background')
    await service.backgroundSettled()
    clearInterval(heartbeat)
    clearInterval(sweep)
  })
}

export default fp(dumps, { name: 'dumps', fastify: '5.x', dependencies: ['persistence', 'image-fetcher'] })
