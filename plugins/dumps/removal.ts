/**
 * Removing a dump's data, aware that its objects may be shared: identical bytes are stored
 * once per user, so an object written for one dump may hold the bytes of images of the
 * user's other dumps (db/stored-objects.ts). DELETE /v1/dumps/{id} and the retention sweep
 * both remove through here.
 *
 * In one transaction that holds the dump's row: the user's objects for the dump's bytes
 * are locked (in SHA-256 order), the dump's outcomes deleted, and the objects no other
 * success of the user has the bytes of are forgotten. A dump recording the same bytes at
 * that moment locks the same object rows, so the two are ordered: either it recorded first
 * and the object stays, referenced, or the removal came first and its image keeps the
 * object written for it. Only after the commit are objects removed from the store, so no
 * recorded image ever points at a removed object.
 *
 * Then whatever else is in the dump's folder and is no object the user still has goes:
 * objects of images recorded before objects were shared (their rows named no object),
 * temporary pieces, and objects a stopped removal left (a removal that stops halfway is
 * finished by the next removal of the same dump, e.g. by retention).
 */
import type { DumpImages } from '../../db/dump-images.js'
import type { RequestLocks } from '../../db/request-locks.js'
import type { RequestLookups } from '../../db/request-lookups.js'
import type { Executor, Requests } from '../../db/requests.js'
import type { StoredObjects } from '../../db/stored-objects.js'
import type { ObjectStore } from '../../lib/object-store/contract.js'
import { dumpPrefix } from '../../lib/storage-layout.js'

export interface DumpRemovalOptions {
  /** the database, for reads outside a removal's transaction */
  db: Executor
  requests: Requests
  lookups: RequestLookups
  locks: RequestLocks
  dumpImages: DumpImages
  storedObjects: StoredObjects
  store: ObjectStore
}

/** How many keys are removed from the store per call. */
const REMOVE_BATCH = 500

export function createDumpRemoval (options: DumpRemovalOptions) {
  const { db, requests, lookups, locks, dumpImages, storedObjects, store } = options

  async function removeKeys (keys: readonly string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += REMOVE_BATCH) await store.remove(keys.slice(i, i + REMOVE_BATCH))
  }

  /** The objects of a dump's folder no longer referenced, and its temporary pieces. */
  async function sweepFolder (userid: number, requestId: number): Promise<void> {
    const prefix = dumpPrefix(userid, requestId)
    if (prefix === null) return
    await store.sweepTemporary(prefix)
    const kept = await storedObjects.keysUnder(db, userid, prefix)
    const leftover: string[] = []
    for await (const key of store.list(prefix)) if (!kept.has(key)) leftover.push(key)
    await removeKeys(leftover)
  }

  /**
   * Removes a dump's outcomes and the objects only it referenced. 'running' (nothing done)
   * when `whileRunning` is false and the dump is not complete; 'not found' when the user
   * has no such dump. `then` runs in the same transaction, after the outcomes are gone.
   */
  async function remove (userid: number, requestId: number, how: { whileRunning: boolean, evenDeleted: boolean, then?: (trx: Executor) => Promise<void> }): Promise<'removed' | 'running' | 'not found'> {
    // A complete dump's outcomes no longer change. One without a success recorded with its
    // object (all from before objects were shared, or none) has no object another dump can
    // point at: plain statements do, without a transaction that holds the write lock over
    // several round trips.
    const shared = (await dumpImages.sha256sOf(db, requestId)).length > 0
    let removed: string[] | 'running' | 'not found'
    if (!shared) {
      const complete = await lookups.isComplete(userid, requestId, how.evenDeleted)
      if (complete === undefined) return 'not found'
      if (!complete && !how.whileRunning) return 'running'
      await dumpImages.removeOf(requestId)
      await how.then?.(db)
      removed = []
    } else {
      removed = await locks.underDumpLock(userid, requestId, async (trx, complete) => {
        if (!complete && !how.whileRunning) return 'running' as const
        const sha256s = await dumpImages.sha256sOf(trx, requestId)
        const objects = await storedObjects.lock(trx, userid, sha256s)
        await dumpImages.removeOf(requestId, trx)
        const still = await dumpImages.referenced(trx, userid, [...objects.keys()])
        const unreferenced = [...objects.keys()].filter((sha256) => !still.has(sha256))
        await storedObjects.forget(trx, userid, unreferenced)
        await how.then?.(trx)
        return unreferenced.map((sha256) => objects.get(sha256)!)
      }, how.evenDeleted)
    }
    if (removed === 'not found' || removed === 'running') return removed
    await removeKeys(removed)
    await sweepFolder(userid, requestId)
    return 'removed'
  }

  return {
    /**
     * DELETE /v1/dumps/{id}: the dump's outcomes and the objects no other dump of the user
     * references go; its row stays, marked deleted, without its record (the quota counts it).
     */
    async deleteDump (userid: number, requestId: number): Promise<'deleted' | 'running' | 'not found'> {
      const removed = await remove(userid, requestId, { whileRunning: false, evenDeleted: false, then: async (trx) => { await requests.markDeleted(trx, requestId) } })
      return removed === 'removed' ? 'deleted' : removed
    },

    /** Retention: the same, for a dump already taken for removal (deleted or not); the caller removes its row after. */
    async retireDump (userid: number, requestId: number): Promise<void> {
      await remove(userid, requestId, { whileRunning: false, evenDeleted: true })
    },

    sweepFolder
  }
}

export type DumpRemoval = ReturnType<typeof createDumpRemoval>
