import { sql, type Kysely } from 'kysely'
import { msUntil, secondsAgo } from './engine.js'
import type { Completion, Executor } from './requests.js'
import type { Database, Engine } from './schema.js'
import type { BodyFormat } from '../schemas/batch.js'

/** The dump an idempotency key names. */
export interface KeyOwner {
  requestId: number
  dataformat: BodyFormat
  batchSha256: Buffer | null
  complete: boolean
}

/** An incomplete request as recovery reads it. */
export interface UnfinishedRow {
  id: number
  userid: number
  dataformat: BodyFormat
  data: Buffer | null
  /** the run that last held it */
  resumes: number
  retry_of: number | null
  run_by: string | null
}

export interface StoredRequest {
  format: BodyFormat
  data: Buffer
  complete: boolean
  /** the dump this one retries, if it is a retry */
  retryOf?: number | null
}

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
 * The reads of the `requests` table: what the quota counts, what an idempotency key names,
 * a user's dump and the list of their dumps, the dumps recovery resumes and those retention
 * retires. Owns no table and writes nothing: the table's writes are all in db/requests.ts.
 */
export function createRequestLookups (db: Kysely<Database>, engine: Engine) {
  return {
    /**
     * The user's rows of the last window, by the database clock, and when the oldest leaves
     * it; and the number the user's next admission gets (`next`). Run it under the user's
     * admission lock when the answer decides an admission.
     *
     * Its cost does not grow with the user's history, nor with the window's rows: admissions
     * are numbered (user_seq), so the window holds the rows from its oldest one's number to
     * the newest number, read from two index entries. Rows are never removed from inside a
     * window (retention keeps far more), and a row admitted later has a later created_at
     * (each is written under the lock, after the one before committed), so that difference
     * is the count. Should the clock step back, the count errs high, never low. While the
     * window holds rows without a number (from before the numbering, or written around
     * db/requests.ts), their rows are counted, at most up to `countUpTo`: enough to decide
     * an admission against that limit.
     */
    async window (executor: Executor, userid: number, windowSeconds: number, countUpTo: number): Promise<{ count: number, ttlMs: number, next: number }> {
      const since = secondsAgo(engine, windowSeconds)
      const inWindow = sql`userid = ${userid} AND created_at > ${since}`
      const { rows } = await sql<{ newest: number | null, first_seq: number | null, oldest: unknown, unnumbered: number, ms: number | null }>`
        SELECT w.newest, w.first_seq, w.oldest, w.unnumbered, ${msUntil(engine, sql`w.oldest`, windowSeconds)} AS ms
        FROM (SELECT
          (SELECT MAX(user_seq) FROM requests WHERE userid = ${userid}) AS newest,
          (SELECT user_seq FROM requests WHERE ${inWindow} ORDER BY created_at, id LIMIT 1) AS first_seq,
          (SELECT MIN(created_at) FROM requests WHERE ${inWindow}) AS oldest,
          EXISTS (SELECT 1 FROM requests WHERE userid = ${userid} AND user_seq IS NULL AND created_at > ${since}) AS unnumbered
        ) w`.execute(executor)
      const row = rows[0]!
      const next = Number(row.newest ?? 0) + 1
      if (row.oldest === null) return { count: 0, ttlMs: 0, next }
      const ttlMs = Math.max(0, Number(row.ms))
      if (Number(row.unnumbered) === 0 && row.first_seq !== null && row.newest !== null) {
        return { count: Number(row.newest) - Number(row.first_seq) + 1, ttlMs, next }
      }
      const bound = Math.max(1, Math.min(Math.floor(countUpTo), 2 ** 31 - 1))
      const counted = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM (SELECT 1 AS one FROM requests WHERE ${inWindow} LIMIT ${sql.lit(bound)}) AS w`.execute(executor)
      return { count: Number(counted.rows[0]!.n), ttlMs, next }
    },

    /** The user's dump that `key` names, if any. */
    async keyOwner (executor: Executor, userid: number, key: string): Promise<KeyOwner | undefined> {
      const row = await executor.selectFrom('requests').select(['id', 'dataformat', 'batch_sha256', 'status'])
        .where('userid', '=', userid).where('idempotency_key', '=', key).executeTakeFirst()
      if (row === undefined) return undefined
      return {
        requestId: row.id,
        dataformat: row.dataformat,
        batchSha256: row.batch_sha256 === null ? null : Buffer.from(row.batch_sha256),
        complete: Boolean(row.status)
      }
    },

    /** Whether one of the user's dumps is complete; undefined when the user has no such dump (or deleted it, unless `evenDeleted`). */
    async isComplete (userid: number, id: number, evenDeleted = false): Promise<boolean | undefined> {
      let query = db.selectFrom('requests').select('status').where('id', '=', id).where('userid', '=', userid)
      if (!evenDeleted) query = query.where('deleted', '=', 0)
      const row = await query.executeTakeFirst()
      return row === undefined ? undefined : Boolean(row.status)
    },

    /** One of the user's logged requests, as stored; undefined when not theirs or not recorded. */
    async find (userid: number, id: number): Promise<StoredRequest | undefined> {
      const row = await db.selectFrom('requests').select(['dataformat', 'data', 'status', 'retry_of'])
        .where('id', '=', id).where('userid', '=', userid).where('deleted', '=', 0).executeTakeFirst()
      if (row === undefined || row.data === null) return undefined
      return { format: row.dataformat, data: Buffer.from(row.data), complete: Boolean(row.status), retryOf: row.retry_of }
    },

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

    /** Incomplete requests whose heartbeat is at least `olderThanMs` old, with the run that last held each. */
    async stale (olderThanMs: number): Promise<UnfinishedRow[]> {
      return await db.selectFrom('requests').select(['id', 'userid', 'dataformat', 'data', 'resumes', 'retry_of', 'run_by'])
        .where('status', '=', 0)
        .where('heartbeat_at', '<=', secondsAgo(engine, olderThanMs / 1000))
        .execute()
    },

    /** Incomplete requests last run by process `runBy` (lib/instance.ts), with the run that last held each. */
    async runBy (runBy: string): Promise<UnfinishedRow[]> {
      return await db.selectFrom('requests').select(['id', 'userid', 'dataformat', 'data', 'resumes', 'retry_of', 'run_by'])
        .where('status', '=', 0)
        .where('run_by', '=', runBy)
        .execute()
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
    }
  }
}

export type RequestLookups = ReturnType<typeof createRequestLookups>
