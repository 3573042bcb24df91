/**
 * Resuming dumps that a stopped instance left incomplete (a crash, a stop past the grace
 * period, a database outage that outlasted its lease): at start and from a periodic sweep,
 * on whichever instance finds one first.
 *
 * A dump is taken over only when its heartbeat is stale, and atomically (requests.claim),
 * so two instances never resume the same one. Or when the process that ran it is known to
 * be dead: a worker's supervisor sees it exit and names it (requests.run_by) to the
 * workers still alive, which take over its dumps at once, whatever their heartbeat says;
 * the dumps of live processes, whose heartbeats stay fresh, are never touched. The outcomes
 * it recorded stay, with their objects; every other object of the dump's folder (a
 * temporary piece, or an image finished after the last recorded batch) is removed before
 * its pending images are downloaded again, so that an object exists only for a recorded
 * success or an image being downloaded.
 *
 * What cannot be resumed is completed instead, its images without an outcome INTERRUPTED:
 * a dump whose admission record cannot be read, and one that has already been resumed
 * `maxResumes` times (a dump that keeps bringing down the instances that run it).
 */
import type { FastifyBaseLogger } from 'fastify'
import type { RequestLookups, UnfinishedRow } from '../../db/request-lookups.js'
import type { Requests } from '../../db/requests.js'
import type { DumpImages, RecordedOutcome } from '../../db/dump-images.js'
import type { ObjectStore } from '../../lib/object-store/contract.js'
import { dumpPrefix, imageIdOfKey } from '../../lib/storage-layout.js'
import type { ItemResult } from '../../schemas/dump.js'
import { serializeDocument } from '../content-negotiation/xml-writer.js'
import type { DumpRun, DumpRunner } from './dump-run.js'
import { completionOf, finalRecord, interrupt, readRecord, withOutcomes } from './records.js'

export interface ResumerOptions {
  requests: Requests
  lookups: RequestLookups
  dumpImages: DumpImages
  store: ObjectStore
  runner: DumpRunner
  log: FastifyBaseLogger
  /** resumptions of one dump after which it is completed as interrupted instead */
  maxResumes: number
  /** this process's name (lib/instance.ts), recorded in the dumps it takes over */
  instance: string
}

type StaleRow = Pick<UnfinishedRow, 'id' | 'userid' | 'dataformat' | 'data' | 'retry_of'>

/** The items of an admission record, or undefined when it cannot be read. */
function itemsOf (row: StaleRow): ItemResult[] | undefined {
  if (row.data === null) return undefined
  try {
    return readRecord(Buffer.from(row.data), row.dataformat)
  } catch {
    return undefined
  }
}

export function createResumer (options: ResumerOptions) {
  const { requests, lookups, dumpImages, store, runner, log } = options

  /**
   * Removes what a stopped run left of a dump: its temporary pieces, and every object of
   * its folder that no recorded success holds (its own key in its row, or, for rows from
   * before keys were recorded, its image id). The object of a recorded success whose bytes
   * turned out to be stored already was removed when it was recorded.
   */
  async function keepRecorded (userid: number, requestId: number, outcomes: Map<number, RecordedOutcome>): Promise<void> {
    const prefix = dumpPrefix(userid, requestId)
    if (prefix === null) return
    await store.sweepTemporary(prefix)
    const { keys, unkeyed } = await dumpImages.recordedObjects(requestId)
    const leftover: string[] = []
    for await (const key of store.list(prefix)) {
      if (keys.has(key)) continue
      const imageId = imageIdOfKey(key)
      if (unkeyed.has(imageId) && outcomes.get(imageId)?.status === 'SUCCESS') continue
      leftover.push(key)
    }
    if (leftover.length > 0) await store.remove(leftover)
  }
  const tasks = new Set<Promise<void>>()

  /** Completes a dump that cannot be resumed: its pending images INTERRUPTED, the recorded ones kept. */
  async function close (row: StaleRow, run: DumpRun, items: ItemResult[] | undefined, why: string): Promise<void> {
    try {
      const completed = interrupt(items ?? []).items
      // with no readable record there is nothing to show: a failure, not an empty success
      const result = items === undefined ? { requestId: row.id, status: 'FAILURE' as const, items: [] } : finalRecord(row.id, completed, row.retry_of)
      const written = await requests.complete(row.id, run.number, Buffer.from(serializeDocument(result, row.dataformat, 'result')), completionOf(result))
      if (written === 'written') log.warn({ requestId: row.id, why }, 'a dump that cannot be resumed was completed as interrupted')
    } finally {
      runner.release(run)
    }
  }

  async function resume (row: StaleRow, run: DumpRun): Promise<void> {
    const outcomes = await dumpImages.outcomes(row.id)
    // the row is held by this run now: whatever the stopped run left unrecorded goes
    await keepRecorded(row.userid, row.id, outcomes)
    const admitted = itemsOf(row)
    const items = admitted === undefined ? undefined : withOutcomes(admitted, outcomes)
    if (items === undefined) return await close(row, run, undefined, 'its admission record cannot be read')
    if (run.number > options.maxResumes) return await close(row, run, items, `it was resumed ${options.maxResumes} times already`)
    const result = await runner.execute(run, row.userid, row.dataformat, items, row.retry_of)
    log.info({ requestId: row.id, run: run.number, status: result.status, kept: outcomes.size }, 'resumed dump completed')
  }

  /** Claims each row (unless another process is first) and resumes it in the background; how many it took. */
  async function takeOver (rows: UnfinishedRow[], olderThanMs: number): Promise<number> {
    let taken = 0
    for (const row of rows) {
      if (runner.runs.has(row.id)) continue
      const number = await requests.claim(row.id, row.resumes, olderThanMs, options.instance)
      if (number === undefined) continue
      taken++
      const run = runner.open(row.id, number)
      const task = resume(row, run).catch((error: unknown) => {
        runner.release(run)
        log.warn({ err: error, requestId: row.id }, 'a resumed dump stopped again before it was complete')
      }).finally(() => tasks.delete(task))
      tasks.add(task)
    }
    return taken
  }

  return {
    /**
     * Takes over the incomplete dumps whose heartbeat is at least `olderThanMs` old and
     * resumes each in the background; returns how many it took.
     */
    async resumeUnfinished (olderThanMs: number): Promise<number> {
      return await takeOver(await lookups.stale(olderThanMs), olderThanMs)
    },

    /**
     * Takes over the incomplete dumps of process `instance`, which must be known to have
     * ended (a worker its supervisor saw exit), whatever the age of their heartbeat, and
     * resumes each in the background; returns how many it took.
     */
    async resumeDumpsOf (instance: string): Promise<number> {
      if (instance === options.instance) throw new Error(`the dumps of ${instance} are this process's own`)
      return await takeOver(await lookups.runBy(instance), 0)
    },

    /** Resolves once every resumption started so far has ended. */
    async settled (): Promise<void> {
      await Promise.allSettled([...tasks])
    }
  }
}
