import type { ExpressionBuilder, Kysely, Transaction } from 'kysely'
import { now, secondsAgo } from './engine.js'
import type { Database, Engine } from './schema.js'
import type { BodyFormat } from '../schemas/batch.js'

/** The database, or a transaction on it: what a query runs on. */
export type Executor = Kysely<Database> | Transaction<Database>

/** What the log row of an admitted request holds. */
export interface RequestRecord {
  dataformat: BodyFormat
  data: Buffer | null
  /** the client's Idempotency-Key and the SHA-256 of its canonical batch, when it sent one */
  idempotency?: { key: string, batchSha256: Buffer }
  /** how many images the dump has */
  images?: number
  /** the dump whose failed images this one retries */
  retryOf?: number
  /** the process that runs the dump (lib/instance.ts) */
  runBy?: string
}

/** A complete dump's final status and counts, kept beside its record for the list of dumps. */
export interface Completion {
  status: 'SUCCESS' | 'PARTIAL' | 'FAILURE'
  succeeded: number
  failed: number
}

/** Whether an insert failed on the (userid, idempotency_key) unique index. */
function isKeyTaken (error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const { errno, code, message } = error as { errno?: unknown, code?: unknown, message?: unknown }
  // MySQL/MariaDB ER_DUP_ENTRY names the index, SQLite the columns
  const duplicate = errno === 1062 || code === 'SQLITE_CONSTRAINT_UNIQUE'
  return duplicate && typeof message === 'string' && message.includes('idempotency_key')
}

/**
 * The `requests` table's owner: every write to the log of admitted dumps is here. A dump's
 * row is inserted at admission (counted by the quota, with the idempotency key it was
 * admitted with), held by one run at a time (`resumes`, `run_by`, `heartbeat_at`),
 * completed with its final record, marked deleted by its user, and at last retired by
 * retention. Its reads are in db/request-lookups.ts; the transactions that hold a user's,
 * a run's or a dump's lock in db/request-locks.ts.
 */
export function createRequests (db: Kysely<Database>, engine: Engine) {
  async function insert (executor: Executor, userid: number, record: RequestRecord, seq: number): Promise<number> {
    const result = await executor.insertInto('requests')
      .values({
        userid,
        dataformat: record.dataformat,
        data: record.data,
        status: 0,
        idempotency_key: record.idempotency?.key ?? null,
        batch_sha256: record.idempotency?.batchSha256 ?? null,
        images: record.images ?? null,
        retry_of: record.retryOf ?? null,
        user_seq: seq,
        run_by: record.runBy ?? null
      })
      .executeTakeFirstOrThrow()
    return Number(result.insertId)
  }

  return {
    /** Logs an admitted request, incomplete, as the user's admission number `seq`; returns its id. */
    insert,

    /**
     * Logs an admitted request with its idempotency key, unless the user's key already
     * names a row: then the unique index refuses the insert, nothing is written and the
     * answer is undefined. Inserting first rather than looking first is what makes two
     * admissions with one key, on any instances, unable to both pass.
     */
    async insertUnlessKeyTaken (executor: Executor, userid: number, record: RequestRecord, seq: number): Promise<number | undefined> {
      try {
        return await insert(executor, userid, record, seq)
      } catch (error) {
        if (isKeyTaken(error)) return undefined
        throw error
      }
    },

    /**
     * Frees the user's `key` when the dump it names was admitted at least `lifetimeSeconds`
     * ago (by the database clock): that dump keeps its row, without the key. Whether it did.
     * Run it under the user's admission lock, before inserting the key again.
     */
    async releaseExpiredKey (executor: Executor, userid: number, key: string, lifetimeSeconds: number): Promise<boolean> {
      // Looked up, then released by primary key: an UPDATE through the (userid, key) index
      // that matched nothing would lock the gap where the key goes, and two users' gap locks
      // deadlock each other's inserts. The caller's lock keeps the two steps together.
      const expired = await executor.selectFrom('requests').select('id')
        .where('userid', '=', userid).where('idempotency_key', '=', key)
        .where('created_at', '<=', secondsAgo(engine, lifetimeSeconds))
        .executeTakeFirst()
      if (expired === undefined) return false
      await executor.updateTable('requests').set({ idempotency_key: null }).where('id', '=', expired.id).execute()
      return true
    },

    /**
     * Takes over an incomplete request for a new run by process `runBy`, atomically: only if
     * it is still incomplete, still held by run `seen`, and its heartbeat still at least
     * `olderThanMs` old (0: whatever its age, for the dumps of a process known to be dead),
     * so that of several instances sweeping at once exactly one gets it. The new run's number
     * (seen + 1), or undefined when someone else was first.
     */
    async claim (id: number, seen: number, olderThanMs: number, runBy?: string): Promise<number | undefined> {
      let update = db.updateTable('requests')
        .set((eb) => ({ resumes: eb('resumes', '+', 1), heartbeat_at: now(engine), ...(runBy === undefined ? {} : { run_by: runBy }) }))
        .where('id', '=', id).where('status', '=', 0).where('resumes', '=', seen)
      if (olderThanMs > 0) update = update.where('heartbeat_at', '<=', secondsAgo(engine, olderThanMs / 1000))
      const result = await update.executeTakeFirst()
      return Number(result.numUpdatedRows) > 0 ? seen + 1 : undefined
    },

    /**
     * Marks these runs as alive; returns the ids of those whose row is no longer theirs
     * (completed, or taken over by another run).
     */
    async heartbeat (runs: ReadonlyArray<{ id: number, run: number }>): Promise<Set<number>> {
      if (runs.length === 0) return new Set()
      const held = (eb: ExpressionBuilder<Database, 'requests'>) =>
        eb.and([eb('status', '=', 0), eb.or(runs.map(({ id, run }) => eb.and([eb('id', '=', id), eb('resumes', '=', run)])))])
      const update = await db.updateTable('requests').set({ heartbeat_at: now(engine) }).where(held).executeTakeFirst()
      if (Number(update.numUpdatedRows) === runs.length) return new Set()
      // rare: find out which (an update within the same millisecond may also count as no change)
      const still = new Set((await db.selectFrom('requests').select('id').where(held).execute()).map((row) => row.id))
      return new Set(runs.filter(({ id }) => !still.has(id)).map(({ id }) => id))
    },

    /**
     * Marks every incomplete request as left behind (its heartbeat at the epoch), so that the
     * first sweep of any process takes it over; how many. Only for a database no running
     * process holds a dump of: an SQLite file, before its service's workers start.
     */
    async releaseUnfinished (): Promise<number> {
      const update = await db.updateTable('requests').set({ heartbeat_at: '1970-01-01 00:00:00' }).where('status', '=', 0).executeTakeFirst()
      return Number(update.numUpdatedRows)
    },

    /**
     * Stores the final record of a dump still incomplete and held by run `run`, and marks it
     * complete: 'written', or 'taken' when it was completed or claimed meanwhile by another
     * run. A retry of a write whose answer was lost finds its own data and counts as written.
     */
    async complete (id: number, run: number, data: Buffer, completion: Completion): Promise<'written' | 'taken'> {
      const update = await db.updateTable('requests')
        .set({ data, status: 1, heartbeat_at: now(engine), outcome: completion.status, succeeded: completion.succeeded, failed: completion.failed })
        .where('id', '=', id).where('status', '=', 0).where('resumes', '=', run)
        .executeTakeFirst()
      if (Number(update.numUpdatedRows) > 0) return 'written'
      const row = await db.selectFrom('requests').select('data').where('id', '=', id).executeTakeFirst()
      return row?.data != null && Buffer.from(row.data).equals(data) ? 'written' : 'taken'
    },

    /**
     * Marks a dump deleted and clears its record and idempotency key; the row stays, so
     * that the quota still counts its admission (a deletion gives no slot back).
     */
    async markDeleted (executor: Executor, id: number): Promise<void> {
      await executor.updateTable('requests').set({ deleted: 1, data: null, idempotency_key: null, batch_sha256: null }).where('id', '=', id).execute()
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

export type Requests = ReturnType<typeof createRequests>
