import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createDumpImages } from '../db/dump-images.js'
import { createRequestLocks } from '../db/request-locks.js'
import { createRequestLookups } from '../db/request-lookups.js'
import { createRequests } from '../db/requests.js'
import { createStoredObjects } from '../db/stored-objects.js'
import { createUrlValidators } from '../db/url-validators.js'
import { thisInstance } from '../lib/instance.js'
import { createPeriodic } from '../lib/periodic.js'
import type { ObjectStore } from '../lib/object-store/contract.js'
import { storeFromOptions } from '../lib/object-store/from-options.js'
import { findUnrecordedKey } from '../lib/storage-layout.js'
import { createDumpRemoval } from './dumps/removal.js'
import { serializeDocument } from './content-negotiation/xml-writer.js'
import { createDumpRunner, type DumpObserver } from './dumps/dump-run.js'
import { createResumer } from './dumps/resume.js'
import { createDumpEvents, createRecordedSignal } from './dumps/events.js'
import { createDumpListing } from './dumps/listing.js'
import { numberBatch, readRecord, runningRecord, withOutcomes } from './dumps/records.js'
import type { Batch, BodyFormat } from '../schemas/batch.js'
import type { DumpResult } from '../schemas/dump.js'
import type { QuotaRecord } from './quota.js'
import type { Principal } from './auth.js'

export { DumpNotRecordedError, type DumpObserver } from './dumps/dump-run.js'
export { failedBatch, imageResult, interrupt, numberBatch, progressOf, readRecord, statusOf } from './dumps/records.js'

export interface DumpsOptions {
  /** where the images are: the image fetcher's store unless given (shorthand: storageDir, a file store of that folder) */
  store?: ObjectStore
  /** image root; the same folder the image fetcher writes to */
  storageDir?: string
  /** how often an instance marks the dumps it is processing as alive (default and at most an eighth of staleAfterMs, and at most 15 s by default) */
  heartbeatMs?: number
  /**
   * An incomplete row whose heartbeat is older than this is taken as left behind by a
   * stopped instance and resumed, at start and by a sweep that runs as often (at least
   * every 60 s). 0 resumes every incomplete row at start, right for the embedded database,
   * which one process owns; its sweep then waits for 60 s (default 60 s).
   */
  staleAfterMs?: number
  /**
   * The name this process records in the dumps it runs (requests.run_by), by which its
   * supervisor names the dumps it left when it dies (default: lib/instance.ts)
   */
  instance?: string
  /** resumptions of one dump after which its pending images are INTERRUPTED instead (default 5) */
  maxResumes?: number
  /** outcomes are recorded once this many wait or the oldest has waited maxDelayMs (default 500 and 250 ms) */
  recording?: { maxBatch?: number, maxDelayMs?: number }
  /** how often an events stream looks for the new outcomes of a dump running on another instance (default 1000 ms) */
  events?: { pollMs?: number }
}

export function createDumpsService (fastify: FastifyInstance, options: DumpsOptions) {
  const { db, engine } = fastify.persistence
  const requests = createRequests(db, engine)
  const lookups = createRequestLookups(db, engine)
  const dumpImages = createDumpImages(db, engine)
  const { store, owned } = options.store === undefined && options.storageDir === undefined
    ? { store: fastify.imageFetcher.store, owned: false }
    : storeFromOptions(options, 'dumps')
  const removal = createDumpRemoval({ db, requests, lookups, locks: createRequestLocks(db, engine), dumpImages, storedObjects: createStoredObjects(engine), store })
  const staleAfterMs = options.staleAfterMs ?? 60_000
  // While running, a row always needs a stale heartbeat: with 0, a dump admitted but not
  // yet being processed would look abandoned.
  const sweepAfterMs = staleAfterMs > 0 ? staleAfterMs : 60_000
  // A run that could not mark itself alive for this long stops its downloads: well before
  // another instance may take its dump over, so that the two never write the same files.
  // Heartbeats come at least four times per lease, so one slow round trip stops nothing.
  const leaseMs = sweepAfterMs / 2
  const observers = new Set<DumpObserver>()
  // each listener on its own: one that throws is logged and stops nothing else
  const tell = <K extends keyof DumpObserver>(event: K, ...args: Parameters<NonNullable<DumpObserver[K]>>): void => {
    for (const observer of observers) {
      try {
        (observer[event] as ((...a: typeof args) => void) | undefined)?.(...args)
      } catch (error) {
        fastify.log.error({ err: error, event }, 'a dump observer failed')
      }
    }
  }
  const observer: DumpObserver = {
    started: (...args) => tell('started', ...args),
    image: (...args) => tell('image', ...args),
    ended: (...args) => tell('ended', ...args)
  }
  // the events streams of this instance wake up when it records outcomes of their dump
  const recorded = createRecordedSignal()
  const runner = createDumpRunner({
    fetcher: fastify.imageFetcher,
    store,
    requests,
    dumpImages,
    urlValidators: createUrlValidators(db, engine),
    log: fastify.log,
    recording: options.recording,
    onRecorded: (requestId) => { recorded.emit(String(requestId)) },
    observer
  })
  const instance = options.instance ?? thisInstance()
  const resumer = createResumer({ requests, lookups, dumpImages, store, runner, log: fastify.log, maxResumes: options.maxResumes ?? 5, instance })
  // dumps that run on after their request was answered; the app's close waits for them
  const background = new Set<Promise<void>>()

  return {
    /** Tells `observer` of every run, image outcome and completion on this instance from now on; returns the function that stops it. */
    observe (listener: DumpObserver): () => void {
      observers.add(listener)
      return () => { observers.delete(listener) }
    },

    /** A dump's history as events (GET /v1/dumps/{id}/events). */
    events: createDumpEvents({ lookups, dumpImages, recorded, pollMs: options.events?.pollMs }),

    /** The user's dumps, newest first (GET /v1/dumps). */
    listing: createDumpListing({ lookups, dumpImages }),

    /** where the images are */
    store,
    /** whether closing the service closes the store (it made it) */
    ownsStore: owned,
    sweepAfterMs,
    leaseMs,

    /** The log row written at admission: the batch numbered, every image PENDING. */
    admissionRecord (batch: Batch, format: BodyFormat, retryOf?: number): QuotaRecord {
      const items = numberBatch(batch)
      const pending = { status: 'PENDING', items }
      const images = items.reduce((sum, item) => sum + item.images.length, 0)
      // admitted here, run here: the row names this process from its first moment
      return { dataformat: format, data: Buffer.from(serializeDocument(pending, format, 'result')), images, runBy: instance, ...(retryOf === undefined ? {} : { retryOf }) }
    },

    /**
     * Downloads every image of an admitted dump, recording outcomes as they happen, and
     * returns the final record; rejects with a DumpNotRecordedError when this instance
     * cannot finish it (the dump is then resumed).
     */
    async process (principal: Principal, requestId: number, batch: Batch, format: BodyFormat, retryOf?: number): Promise<DumpResult> {
      return await runner.execute(runner.open(requestId, 0), principal.userid, format, numberBatch(batch), retryOf ?? null)
    },

    /**
     * The record of one of the user's dumps: once complete, as stored; while it runs, the
     * admission record with the outcomes recorded so far and its progress.
     */
    async find (userid: number, requestId: number): Promise<{ format: BodyFormat, data: Buffer, complete: boolean } | undefined> {
      const stored = await lookups.find(userid, requestId)
      if (stored === undefined || stored.complete) return stored
      let admitted
      try {
        admitted = readRecord(stored.data, stored.format)
      } catch {
        return stored // not one this service wrote: shown as it is, until a resumption completes it
      }
      const items = withOutcomes(admitted, await dumpImages.outcomes(requestId))
      return { format: stored.format, data: Buffer.from(serializeDocument(runningRecord(requestId, items, stored.retryOf), stored.format, 'result')), complete: false }
    },

    /**
     * The object that holds one image of one of the user's dumps, its type and SHA-256;
     * only once its success is recorded, so nothing is served that its record does not
     * claim (dumps completed before outcomes were recorded per image: any object of theirs).
     * A success names its object (possibly another dump's: identical bytes are stored once
     * per user); rows from before that are found in the dump's folder, as the image's own
     * object or that of the image of the same dump whose download it shares (the same URL).
     */
    async image (userid: number, requestId: number, imageId: number): Promise<{ key: string, contentType: string, sha256?: string } | undefined> {
      const [stored, complete] = await Promise.all([dumpImages.storedImage(requestId, imageId), lookups.isComplete(userid, requestId)])
      // the dump must be the user's (and not deleted): an image row alone says nothing of whose it is
      if (complete === undefined || stored?.status === 'FAILURE') return undefined
      if (stored === undefined && !complete) return undefined
      if (stored?.key !== undefined && stored.contentType !== undefined) return { key: stored.key, contentType: stored.contentType, ...(stored.sha256 === undefined ? {} : { sha256: stored.sha256 }) }
      const found = await findUnrecordedKey(store, userid, requestId, stored?.file ?? imageId)
      if (found === undefined) return undefined
      return stored?.sha256 === undefined ? found : { ...found, sha256: stored.sha256 }
    },

    /**
     * DELETE /v1/dumps/{id}: removes the dump's record and outcomes and the objects no other
     * dump of the user references; 'running' while it runs, 'not found' when the user has
     * no such dump. The admission stays counted by the quota.
     */
    async deleteDump (userid: number, requestId: number): Promise<'deleted' | 'running' | 'not found'> {
      return await removal.deleteDump(userid, requestId)
    },

    /** Takes over and resumes dumps left incomplete by a stopped instance; how many it took. */
    async resumeUnfinished (olderThanMs = staleAfterMs): Promise<number> {
      return await resumer.resumeUnfinished(olderThanMs)
    },

    /** This process's name in the dumps it runs. */
    instance,

    /**
     * Takes over and resumes, at once, the dumps left incomplete by process `instance`,
     * which has ended (a worker its supervisor saw exit); how many it took.
     */
    async resumeDumpsOf (deadInstance: string): Promise<number> {
      return await resumer.resumeDumpsOf(deadInstance)
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

    /** Resolves once every dump this instance is processing or resuming now has ended. */
    async settled (): Promise<void> {
      await Promise.all([runner.settled(), resumer.settled()])
    },

    /** Stops every run that could not be marked alive for longer than its lease. */
    expireLeases (): void {
      const now = performance.now()
      for (const run of runner.runs.values()) {
        if (now - run.leaseFrom > leaseMs) run.stop('unreachable')
      }
    },

    /** Marks this instance's runs as alive; a run whose row was taken over stops. */
    async heartbeat (): Promise<void> {
      const sentAt = performance.now()
      const live = [...runner.runs.values()].filter((run) => run.stopped === undefined)
      const lost = await requests.heartbeat(live.map((run) => ({ id: run.requestId, run: run.number })))
      for (const run of live) {
        if (lost.has(run.requestId)) run.stop('taken')
        else run.leaseFrom = Math.max(run.leaseFrom, sentAt)
      }
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
  const logFailure = (what: string) => (error: unknown) => { fastify.log.error({ err: error }, what) }
  const resume = async (olderThanMs?: number): Promise<void> => {
    const resumed = await service.resumeUnfinished(olderThanMs)
    if (resumed > 0) fastify.log.warn({ resumed }, 'resuming dumps left unfinished by a stopped instance')
  }
  await resume().catch(logFailure('looking for unfinished dumps failed'))
  const { sweepAfterMs, leaseMs } = service
  // four heartbeats per lease: three may fail or be slow before a live dump stops
  const heartbeatMs = Math.max(1, Math.min(options.heartbeatMs ?? 15_000, Math.floor(leaseMs / 4)))
  const loops = [
    // leases expire on every tick, even while a heartbeat (one at a time) is stuck on the database
    createPeriodic({ everyMs: heartbeatMs, run: () => { service.expireLeases() }, onError: logFailure('expiring dump leases failed') }),
    createPeriodic({ everyMs: heartbeatMs, run: () => service.heartbeat(), onError: logFailure('dump heartbeat failed') }),
    createPeriodic({ everyMs: Math.min(60_000, sweepAfterMs), run: () => resume(sweepAfterMs), onError: logFailure('looking for unfinished dumps failed') })
  ]
  for (const loop of loops) loop.start()
  // registered after the image fetcher, so this runs before it closes (onClose runs last-in first)
  fastify.addHook('onClose', async () => {
    // Dumps answered 202 run on like requests in flight: the close waits for them (bounded
    // by SHUTDOWN_GRACE_MS in server.ts), their heartbeat still beating.
    if (service.inBackground() > 0) fastify.log.info({ dumps: service.inBackground() }, 'closing: waiting for the dumps running in the background')
    await service.backgroundSettled()
    const stopped = Promise.all(loops.map((loop) => loop.stop()))
    // The fetcher would be closed after this hook; closing it now ends the downloads at
    // once, so that the runs record the outcomes they have while the database (closed
    // after this hook too) is still there. Their dumps are resumed later. A sweep in flight
    // may still take dumps over: the runs are settled once it has ended.
    await fastify.imageFetcher.close()
    await stopped
    await service.settled()
    if (service.ownsStore) await service.store.close()
  })
}

export default fp(dumps, { name: 'dumps', fastify: '5.x', dependencies: ['persistence', 'image-fetcher'] })
