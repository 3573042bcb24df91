import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { createDumpImages } from '../db/dump-images.js'
import { createRequestLookups } from '../db/request-lookups.js'
import { createRequestLocks } from '../db/request-locks.js'
import { createRequests } from '../db/requests.js'
import { createStoredObjects } from '../db/stored-objects.js'
import type { ObjectStore } from '../lib/object-store/contract.js'
import { storeFromOptions } from '../lib/object-store/from-options.js'
import { createPeriodic } from '../lib/periodic.js'
import { createDumpRemoval } from './dumps/removal.js'
import { setTimeout as sleep } from 'node:timers/promises'

export interface RetentionOptions {
  /** dumps admitted longer ago than this many days are removed (records, outcomes, files) */
  retentionDays: number
  /** where the images are: the image fetcher's store unless given */
  store?: ObjectStore
  /** shorthand for a file store of this folder (the same folder the image fetcher writes to) */
  storageDir?: string
  /** how often a sweep starts, in ms (default 60 s, give or take a tenth, so instances drift apart) */
  intervalMs?: number
  /** dumps looked at per batch (default 50) */
  batchSize?: number
  /** at most this many dumps removed per sweep, so a backlog is worked off over several (default 1000) */
  maxPerSweep?: number
  /** a dump taken by a sweep that stopped halfway is taken again after this long, in seconds (default 600) */
  leaseSeconds?: number
}

export interface SweepReport {
  /** dumps this sweep removed: row, outcomes, and the objects no other dump of the user references */
  removed: number
  /** dumps it found expired but another sweep (on this or another instance) had taken */
  takenElsewhere: number
}

/** A retention that would reach into what the quota or the idempotency keys still count on. */
export class RetentionTooShortError extends Error {
  override name = 'RetentionTooShortError'
}

/**
 * Whether InnoDB rolled the statement back to break a deadlock (1213) or gave up waiting for
 * a lock (1205). Sweeps on several instances delete neighbouring rows of the same indexes at
 * once, and InnoDB's next-key locks make such a victim possible: the statement changed
 * nothing and can simply run again.
 */
function isLockConflict (error: unknown): boolean {
  const { errno, code } = typeof error === 'object' && error !== null ? (error as { errno?: unknown, code?: unknown }) : { errno: undefined, code: undefined }
  // SQLite: another connection held the write lock past busy_timeout (instances sharing one file)
  return errno === 1213 || errno === 1205 || code === 'SQLITE_BUSY'
}

/** Runs one step of a removal, again (up to 4 times in all) when it lost a lock conflict. */
async function againOnLockConflict<T> (step: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step()
    } catch (error) {
      if (attempt >= 4 || !isLockConflict(error)) throw error
      await sleep(10 * 2 ** attempt + Math.random() * 10)
    }
  }
}

/**
 * Removes dumps older than the retention, a bounded batch at a time: each is first taken
 * (db/requests.ts, claimExpired), so that of several instances sweeping at once exactly one
 * removes it; then its outcomes and the objects no other dump of the user references go
 * (plugins/dumps/removal.ts, as DELETE /v1/dumps/{id} removes them: bytes are stored once
 * per user, so a newer dump may hold the bytes of an old one), then its row. A sweep that
 * stops halfway leaves the row, taken: it is taken again after the lease and finished, so
 * no object outlives its record for long. Dumps deleted by their user are removed the same
 * way once expired, which also removes anything their deletion left behind. A dump
 * still running is never removed, nor anything inside the quota's window or an
 * idempotency key's lifetime (the retention is refused when shorter than either).
 */
export function createRetention (fastify: FastifyInstance, options: RetentionOptions) {
  const { db, engine } = fastify.persistence
  const requests = createRequests(db, engine)
  const lookups = createRequestLookups(db, engine)
  const dumpImages = createDumpImages(db, engine)
  const { store, owned } = options.store === undefined && options.storageDir === undefined && fastify.hasDecorator('imageFetcher')
    ? { store: fastify.imageFetcher.store, owned: false }
    : storeFromOptions(options, 'retention')
  const removal = createDumpRemoval({ db, requests, lookups, locks: createRequestLocks(db, engine), dumpImages, storedObjects: createStoredObjects(engine), store })
  const retentionSeconds = options.retentionDays * 86_400
  const keep = Math.max(fastify.quota.windowSeconds, fastify.quota.idempotencyKeySeconds)
  if (!(retentionSeconds >= keep)) {
    throw new RetentionTooShortError(`a retention of ${options.retentionDays} days would remove dumps the quota or an idempotency key still counts on (the last ${keep} s): keep them at least ${Math.ceil(keep / 86_400)} days`)
  }
  const batchSize = options.batchSize ?? 50
  const maxPerSweep = options.maxPerSweep ?? 1000
  const leaseSeconds = options.leaseSeconds ?? 600

  return {
    retentionSeconds,
    /** whether closing the app closes the store (it made it) */
    ownsStore: owned,
    store,

    /** One sweep: expired dumps removed, batch by batch, at most maxPerSweep; `stopping` ends it between dumps. */
    async sweep (stopping: () => boolean = () => false): Promise<SweepReport> {
      const report: SweepReport = { removed: 0, takenElsewhere: 0 }
      while (report.removed < maxPerSweep && !stopping()) {
        const batch = await lookups.expired(retentionSeconds, Math.min(batchSize, maxPerSweep - report.removed))
        let takenHere = 0
        for (const { id, userid } of batch) {
          if (stopping()) break
          if (!await againOnLockConflict(() => requests.claimExpired(id, retentionSeconds, leaseSeconds))) {
            report.takenElsewhere++
            continue
          }
          takenHere++
          await againOnLockConflict(() => removal.retireDump(userid, id))
          if (await againOnLockConflict(() => requests.remove(id))) report.removed++
        }
        // the rest of the expired rows are taken by other sweeps, or there are none left
        if (batch.length < batchSize || takenHere === 0) break
      }
      return report
    }
  }
}

export type Retention = ReturnType<typeof createRetention>

declare module 'fastify' {
  interface FastifyInstance {
    retention: Retention
  }
}

async function retention (fastify: FastifyInstance, options: RetentionOptions): Promise<void> {
  const service = createRetention(fastify, options)
  fastify.decorate('retention', service)
  const sweeps = createPeriodic({
    everyMs: options.intervalMs ?? 60_000,
    jitter: 0.1,
    // one sweep at a time; closing ends the one in flight between two dumps
    run: async (closing) => {
      const report = await service.sweep(() => closing.aborted)
      if (report.removed > 0) fastify.log.info(report, 'retention: removed dumps past their retention')
    },
    onError: (error) => { fastify.log.error({ err: error }, 'retention sweep failed; the next one tries again') }
  })
  fastify.addHook('onReady', async () => { sweeps.start() })
  fastify.addHook('onClose', async () => {
    await sweeps.stop()
    if (service.ownsStore) await service.store.close()
  })
}

export default fp(retention, { name: 'retention', fastify: '5.x', dependencies: ['persistence', 'quota'] })
