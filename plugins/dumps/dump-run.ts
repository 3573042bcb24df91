/**
 * One run of one dump on this instance: downloads the images that have no outcome yet,
 * records each outcome as it happens (through the batching recorder, after the image's
 * file has its final name), and, once every image has one, writes the final record.
 *
 * A run holds its dump's row by its run number (`requests.resumes`): the admission's run
 * is 0, each resumption the next. Every write it makes lands only while the row is still
 * its own, so a run that was taken over (another instance found its heartbeat stale)
 * records nothing more. It also stops itself before that can happen: when it has not been
 * able to mark itself alive for a lease of less than the staleness threshold, it stops
 * its downloads, so that the instance that takes over never meets its files being written.
 *
 * Images whose URLs are the same (same-url.ts) are downloaded once; the others get the
 * outcome too, and are served from the object of the image that was downloaded. Bytes the
 * user has stored before (the same SHA-256) are stored once: when an outcome is recorded,
 * its image points at the user's older object, and the object just written is removed
 * (db/dump-images.ts, record).
 *
 * A URL the user stored before is revalidated (revalidation.ts): on a 304 the image points
 * at the user's object for the earlier bytes, by key; nothing is written. Whether that
 * object is still there is decided when the reuse is recorded, under the same row locks a
 * removal takes (db/stored-objects.ts): a reuse whose object was removed in between is not
 * recorded, and its URL is downloaded again.
 *
 * A run that stops (taken over, database out of reach, service stopping) leaves its dump
 * incomplete, with the outcomes it recorded; the images without one are downloaded again
 * when the dump is resumed, which first removes any file they left.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { Requests } from '../../db/requests.js'
import type { DumpImages } from '../../db/dump-images.js'
import type { UrlValidators } from '../../db/url-validators.js'
import { createServiceError } from '../../lib/errors.js'
import type { ObjectStore } from '../../lib/object-store/contract.js'
import { dumpTarget } from '../../lib/storage-layout.js'
import type { BodyFormat } from '../../schemas/batch.js'
import type { DumpResult, ImageResult, ItemResult } from '../../schemas/dump.js'
import { serializeDocument } from '../content-negotiation/xml-writer.js'
import { FetchGroup, type ImageFetcher } from '../image-fetcher.js'
import { createOutcomeRecorder, type OutcomeRecorder } from './outcome-recorder.js'
import { completionOf, finalRecord, imageResult, imagesOf, withOutcomes } from './records.js'
import { createRevalidation } from './revalidation.js'
import { groupByDownload } from './same-url.js'

/** The answer to a dump that could not be finished by this instance; it goes on, or will be resumed. */
export class DumpNotRecordedError extends createServiceError('DUMP_NOT_RECORDED', 503, 'this dump could not be finished here; it will be resumed: follow it at GET /v1/dumps/{requestId}') {}

/** Why a run stopped before its dump was complete. */
export type StopReason = 'taken' | 'unreachable' | 'stopping'

function notFinished (requestId: number, reason: StopReason): DumpNotRecordedError {
  const follow = `follow it at GET /v1/dumps/${requestId}`
  const publicMessage = {
    taken: `dump ${requestId} was taken over by another instance, which goes on with it (this one could not record its progress in time); ${follow}`,
    unreachable: `the database could not be reached to record the progress of dump ${requestId}; the outcomes recorded so far are kept, and the rest of its images will be downloaded again when it is resumed; ${follow}`,
    stopping: `the service stopped before dump ${requestId} was finished; it will be resumed with the images not yet recorded; ${follow}`
  }[reason]
  return new DumpNotRecordedError(`dump ${requestId}: stopped (${reason}) before it was complete`, { publicMessage })
}

const interrupted = (result: ImageResult): boolean =>
  result.status === 'FAILURE' && result.error?.type === 'INTERNAL_ERROR' && result.error.code === 'INTERRUPTED'

/** A run of one dump on this instance. */
export class DumpRun {
  readonly group = new FetchGroup()
  /** when (performance.now) the row was last known to be marked alive by this run */
  leaseFrom = performance.now()
  #stopped: StopReason | undefined
  recorder: OutcomeRecorder<ImageResult> | undefined

  constructor (readonly requestId: number, readonly number: number) {}

  get stopped (): StopReason | undefined { return this.#stopped }

  /** Stops the run's downloads and recording; the first reason given stands. */
  stop (reason: Exclude<StopReason, 'stopping'>): void {
    if (this.#stopped !== undefined) return
    this.#stopped = reason
    this.group.abort()
    this.recorder?.stop()
  }
}

/** What a runner tells as it goes (metrics, live progress); a listener must not throw. */
export interface DumpObserver {
  /** a run of a dump starts: its admission's, or a resumption */
  started?: (requestId: number) => void
  /**
   * an image of it has its outcome (an interrupted download is none: the image stays
   * pending); `downloaded` is false for an image whose URL was downloaded for another image
   * of the dump (its bytes are stored once, under that one), and for a reused image (the
   * origin answered 304: its bytes were stored by an earlier dump)
   */
  image?: (requestId: number, result: ImageResult, downloaded: boolean) => void
  /** the run ended: with the dump's final record once it completed it, else undefined */
  ended?: (requestId: number, result: DumpResult | undefined) => void
}

export interface DumpRunnerOptions {
  fetcher: ImageFetcher
  store: ObjectStore
  requests: Requests
  dumpImages: DumpImages
  urlValidators: UrlValidators
  log: FastifyBaseLogger
  /** told after each batch of outcomes and the final record is written (the events stream wakes up) */
  onRecorded?: (requestId: number) => void
  /** the recording cadence (outcome-recorder.ts) */
  recording?: { maxBatch?: number, maxDelayMs?: number }
  observer?: DumpObserver
}

export function createDumpRunner (options: DumpRunnerOptions) {
  const { fetcher, store, requests, dumpImages, urlValidators, log, observer = {} } = options
  const runs = new Map<number, DumpRun>()
  const executing = new Set<Promise<unknown>>()

  /** Writes the final record, retrying through a brief database hiccup while the run is not stopped. */
  async function complete (run: DumpRun, result: DumpResult, format: BodyFormat): Promise<'written' | 'taken' | 'unreachable'> {
    const data = Buffer.from(serializeDocument(result, format, 'result'))
    for (let attempt = 1; ; attempt++) {
      try {
        return await requests.complete(run.requestId, run.number, data, completionOf(result))
      } catch (error) {
        if (attempt >= 4 || run.stopped !== undefined) {
          log.error({ err: error, requestId: run.requestId }, 'the final record of a dump could not be written')
          return 'unreachable'
        }
        await sleep(100 * 2 ** attempt)
      }
    }
  }

  async function execute (run: DumpRun, userid: number, format: BodyFormat, items: ItemResult[], retryOf: number | null): Promise<DumpResult> {
    const { requestId } = run
    const results = new Map<number, ImageResult>()
    // image → the image whose file holds its bytes, for the images whose URL was downloaded for another
    const storedAs = new Map<number, number>()
    // image → the key of the object written for its bytes, for every downloaded success
    const keys = new Map<number, string>()
    // reused images whose object was removed before their reuse was recorded
    const gone: number[] = []
    const revalidation = createRevalidation(urlValidators, log, userid, requestId)
    const recorder = createOutcomeRecorder<ImageResult>({
      ...options.recording,
      write: async (batch) => {
        const placement = { keys, redundant: [] as string[], gone: [] as number[] }
        if (await dumpImages.record(requestId, run.number, batch, storedAs, placement) === 'taken') {
          run.stop('taken')
          return
        }
        const lost = new Set(placement.gone)
        gone.push(...placement.gone)
        const recorded = lost.size === 0 ? batch : batch.filter((result) => !lost.has(result.imageId))
        // a reuse is told once recorded: until then its object may turn out to be gone
        for (const result of recorded) if (result.reused === true) observer.image?.(requestId, result, false)
        await revalidation.recorded(recorded)
        options.onRecorded?.(requestId)
        // bytes the user had already: the images point at the older object. One left
        // behind (the store failing now) is removed with its dump's folder later.
        if (placement.redundant.length > 0) {
          await store.remove(placement.redundant).catch((error: unknown) => {
            log.warn({ err: error, requestId }, 'removing objects whose bytes were stored already failed')
          })
        }
      },
      onError: (error) => { log.warn({ err: error, requestId }, 'recording image outcomes failed; trying again') }
    })
    run.recorder = recorder

    /** Downloads (or, with `revalidate`, revalidates) the URL of a group of images once, and hands the outcome to each. */
    async function fetchGroup (group: ImageResult[], revalidate: boolean): Promise<void> {
      const first = group[0]!
      const before = revalidate ? revalidation.before(first.url) : undefined
      const outcome = await fetcher.fetchImage(first.url, dumpTarget(userid, requestId, first.imageId), run.group, before)
      revalidation.fetched(first.imageId, first.url, outcome)
      for (const image of group) {
        const result = imageResult(requestId, image, outcome)
        // a stopped download leaves its images pending, for the run that resumes the dump
        if (interrupted(result)) return
        if (outcome.status === 'SUCCESS') {
          // a reuse wrote no object: it points at the user's object for its bytes
          if (outcome.reused !== true) keys.set(image.imageId, outcome.path)
          if (image !== first) storedAs.set(image.imageId, first.imageId)
        }
        results.set(image.imageId, result)
        recorder.add(result)
        if (result.reused !== true) observer.image?.(requestId, result, image === first)
      }
    }

    async function flush (): Promise<void> {
      if (run.stopped !== undefined) return
      await recorder.flush().catch((error: unknown) => {
        log.error({ err: error, requestId }, 'the image outcomes of a dump could not be recorded')
        run.stop('unreachable')
      })
    }

    observer.started?.(requestId)
    let completed: DumpResult | undefined
    try {
      const pending = imagesOf(items).filter((image) => image.status === 'PENDING')
      // A URL that appears more than once is downloaded once, into the file of its first
      // image; the others get the same outcome (their own id and location) and no file:
      // their recorded outcome names the file that holds their bytes.
      const groups = groupByDownload(pending)
      await revalidation.lookUp(groups.map((group) => group[0]!.url))
      await Promise.all(groups.map((group) => fetchGroup(group, true)))
      await flush()
      // Reuses whose object was removed between the look-up and their recording (the dump
      // that stored it was deleted or retired meanwhile) were not recorded: their URLs are
      // downloaded again, unconditionally, as if never stored.
      if (gone.length > 0 && run.stopped === undefined) {
        const again = new Set(gone.splice(0))
        for (const imageId of again) results.delete(imageId)
        await Promise.all(groupByDownload(pending.filter((image) => again.has(image.imageId))).map((group) => fetchGroup(group, false)))
        await flush()
      }
      if (run.stopped !== undefined) throw notFinished(requestId, run.stopped)
      const done = withOutcomes(items, results)
      // the fetcher was closed under it: the service is stopping
      if (imagesOf(done).some((image) => image.status === 'PENDING')) throw notFinished(requestId, 'stopping')
      const result = finalRecord(requestId, done, retryOf)
      const written = await complete(run, result, format)
      if (written === 'written') {
        options.onRecorded?.(requestId)
        return (completed = result)
      }
      throw notFinished(requestId, written)
    } finally {
      observer.ended?.(requestId, completed)
      recorder.stop()
      runs.delete(requestId)
    }
  }

  return {
    /** this instance's runs, by request id */
    runs: runs as ReadonlyMap<number, DumpRun>,

    /** Starts holding a dump for run `number` (heartbeats and lease from now). */
    open (requestId: number, number: number): DumpRun {
      const run = new DumpRun(requestId, number)
      runs.set(requestId, run)
      return run
    },

    /** Lets go of a run that will not be executed. */
    release (run: DumpRun): void {
      if (runs.get(run.requestId) === run) runs.delete(run.requestId)
    },

    /**
     * Downloads the pending images of `items`, records them and completes the dump;
     * resolves with its final record or rejects with a DumpNotRecordedError.
     */
    execute (run: DumpRun, userid: number, format: BodyFormat, items: ItemResult[], retryOf: number | null = null): Promise<DumpResult> {
      const execution = execute(run, userid, format, items, retryOf)
      executing.add(execution)
      void execution.catch(() => {}).finally(() => executing.delete(execution))
      return execution
    },

    /** Resolves once every run executing now has ended. */
    async settled (): Promise<void> {
      await Promise.allSettled([...executing])
    }
  }
}

export type DumpRunner = ReturnType<typeof createDumpRunner>
