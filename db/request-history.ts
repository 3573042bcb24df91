import type { Kysely } from 'kysely'
import { now, secondsAgo } from './engine.js'
import type { Completion } from './requests.js'
import type { Database, Engine } from './schema.js'
import type { BodyFormat } from '../schemas/batch.js'

/** A row of the list of a user's dumps: the counts are null on rows kept before they were. */
export interface ListedRequest {
  id: number
  dataformat: BodyFormat
  complete: boolean
  createdAt: Date
  images: number | null
  outcome: Completion['status'] | null
  succeeded: number | null
  failed: number | null
  retryOf: number | null
}

/** A timestamp as read back: a Date from MySQL (read in UTC), UTC text from SQLite. */
function asUtcDate (value: Date | string): Date {
  return value instanceof Date ? value : new Date(`${value.replace(' ', 'T')}Z`)
}

/**
 * The `requests` table's queries over past dumps (db/requests.ts, the table's owner,
 * includes them): the list of a user's dumps, and retention's removal of old ones.
 */
export function createRequestHistory (db: Kysely<Database>, engine: Engine) {
  return {
    /**
     * A page of the user's dumps, newest first: at most `limit` of those with an id below
     * `beforeId` (all with undefined). Ids grow with admission, and one user's admissions
     * are serialised by their lock, so a page boundary never skips a dump admitted meanwhile.
     */
    async list (userid: number, beforeId: number | undefined, limit: number): Promise<ListedRequest[]> {
      let query = db.selectFrom('requests')
        .select(['id', 'dataformat', 'status', 'created_at', 'images', 'outcome', 'succeeded', 'failed', 'retry_of'])
        .where('userid', '=', userid).where('deleted', '=', 0)
      if (beforeId !== undefined) query = query.where('id', '<', beforeId)
      const rows = await query.orderBy('id', 'desc').limit(limit).execute()
      return rows.map((row) => ({
        id: row.id,
        dataformat: row.dataformat,
        complete: Boolean(row.status),
        createdAt: asUtcDate(row.created_at),
        images: row.images,
        outcome: row.outcome,
        succeeded: row.succeeded,
        failed: row.failed,
        retryOf: row.retry_of
      }))
    },

    /**
     * Up to `limit` complete dumps admitted more than `olderThanSeconds` ago, oldest first,
     * found through the created_at index (only the rows returned, and incomplete ones met
     * on the way, are read). A dump still running is never retired.
     */
    async expired (olderThanSeconds: number, limit: number): Promise<Array<{ id: number, userid: number }>> {
      return await db.selectFrom('requests').select(['id', 'userid'])
        .where('created_at', '<', secondsAgo(engine, olderThanSeconds)).where('status', '=', 1)
        .orderBy('created_at').limit(limit)
        .execute()
    },

    /**
     * Takes an expired dump for removal, atomically: only while it is still complete, still
     * older than `olderThanSeconds`, and not taken by another sweep within the last
     * `leaseSeconds` (a complete row's heartbeat is otherwise its completion), so that of
     * several instances sweeping at once exactly one removes it; one that stopped halfway
     * leaves it to be taken again after the lease. Whether this caller got it.
     */
    async claimExpired (id: number, olderThanSeconds: number, leaseSeconds: number): Promise<boolean> {
      const update = await db.updateTable('requests').set({ heartbeat_at: now(engine) })
        .where('id', '=', id).where('status', '=', 1)
        .where('created_at', '<', secondsAgo(engine, olderThanSeconds))
        .where('heartbeat_at', '<=', secondsAgo(engine, leaseSeconds))
        .executeTakeFirst()
      return Number(update.numUpdatedRows) > 0
    },

    /** Deletes a dump's row (its outcomes go with it); whether it was there. */
    async remove (id: number): Promise<boolean> {
      const deleted = await db.deleteFrom('requests').where('id', '=', id).executeTakeFirst()
      return Number(deleted.numDeletedRows) > 0
    }
  }
}
