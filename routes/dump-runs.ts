/**
 * The dumps the routes of one scope have started and that are still running, and the wait
 * for a dump to complete wherever it runs: a replay of an Idempotency-Key that arrives
 * while its dump is still downloading waits here.
 *
 * A dump running in this process is awaited directly. One running on another instance (or
 * admitted here but not yet started) is polled in the database, one light query every
 * `pollMs`. The wait ends, like the dump it waits for, once every image has an outcome:
 * each download has its own deadline (DOWNLOAD_TIMEOUT_MS), and a dump whose instance died
 * is completed by the recovery sweep of any other (RECOVERY_STALE_MS). It also ends when
 * the client goes away, and, for a dump of another instance, when this one stops.
 */
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { FastifyInstance } from 'fastify'
import { createRequestLookups } from '../db/request-lookups.js'
import { createServiceError } from '../lib/errors.js'
import type { Principal } from '../plugins/auth.js'
import type { Batch, BodyFormat } from '../schemas/batch.js'
import type { DumpResult } from '../schemas/dump.js'

export interface DumpRunsOptions {
  /** how often the record of a dump running elsewhere is read while waiting for it, in ms (default 200) */
  pollMs?: number
  /** consecutive failed reads after which a wait gives up with a 503 (default 5) */
  maxPollFailures?: number
}

/** A replay's wait could not read the dump's progress; the dump itself goes on. */
export class DumpProgressUnavailableError extends createServiceError('DUMP_PROGRESS_UNAVAILABLE', 503,
  'the dump is still running, but its progress cannot be read right now; send the same request again (same Idempotency-Key) for its result') {}

export type WaitOutcome = 'complete' | 'client gone' | 'stopping'

export function createDumpRuns (fastify: FastifyInstance, options: DumpRunsOptions = {}) {
  const pollMs = options.pollMs ?? 200
  const maxPollFailures = options.maxPollFailures ?? 5
  const lookups = createRequestLookups(fastify.persistence.db, fastify.persistence.engine)
  // request id → a promise that settles (never rejects) when that dump's processing ends
  const running = new Map<number, Promise<void>>()
  const stopping = new AbortController()
  fastify.addHook('preClose', async () => { stopping.abort() })

  /** Whether the record is complete (or gone); false after a failed read, which `failures` counts. */
  async function isComplete (userid: number, requestId: number, failures: { count: number }): Promise<boolean> {
    try {
      const complete = await lookups.isComplete(userid, requestId)
      failures.count = 0
      return complete !== false
    } catch (error) {
      if (++failures.count >= maxPollFailures) {
        throw new DumpProgressUnavailableError(`dump ${requestId}: its record could not be read ${maxPollFailures} times in a row`, { cause: error })
      }
      fastify.log.warn({ err: error, requestId }, 'reading the progress of a dump failed')
      return false
    }
  }

  return {
    /** Processes an admitted dump (dumps.process), known as running here until it ends. */
    start (principal: Principal, requestId: number, batch: Batch, format: BodyFormat, retryOf?: number): Promise<DumpResult> {
      const run = fastify.dumps.process(principal, requestId, batch, format, retryOf)
      // its failure is its caller's to handle; waiters only need to know that it ended
      const ended = run.then(() => {}, () => {})
      running.set(requestId, ended)
      void ended.then(() => running.delete(requestId))
      return run
    },

    /**
     * Waits until the user's dump is complete (or there is no such dump), the client is
     * gone (`client` aborted), or this instance stops while the dump runs elsewhere.
     */
    async waitForComplete (userid: number, requestId: number, client: AbortSignal): Promise<WaitOutcome> {
      const clientGone = client.aborted ? Promise.resolve() : once(client, 'abort').then(() => {})
      const either = AbortSignal.any([client, stopping.signal])
      const failures = { count: 0 }
      for (;;) {
        const here = running.get(requestId)
        if (here !== undefined) await Promise.race([here, clientGone])
        if (client.aborted) return 'client gone'
        if (await isComplete(userid, requestId, failures)) return 'complete'
        if (running.has(requestId)) continue
        if (stopping.signal.aborted) return 'stopping'
        await sleep(pollMs, undefined, { signal: either }).catch(() => {})
      }
    }
  }
}

export type DumpRuns = ReturnType<typeof createDumpRuns>
