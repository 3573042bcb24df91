import { sql, type ExpressionBuilder, type Kysely, type Transaction } from 'kysely'
import { msUntil, now, secondsAgo } from './engine.js'
import type { Database, Engine } from './schema.js'
import type { BodyFormat } from '../schemas/batch.js'
import { createRequestHistory } from './request-history.js'

export type { ListedRequest } from './request-history.js'

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

/** The dump an idempotency key names. */
export interface KeyOwner {
  requestId: number
  dataformat: BodyFormat
  batchSha256: Buffer | null
  complete: boolean
}

/** Whether an insert failed on the (userid, idempotency_key) unique index. */
function isKeyTaken (error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false
  const { errno, code, message } = error as { errno?: unknown, code?: unknown, message?: unknown }
  // MySQL/MariaDB ER_DUP_ENTRY names the index, SQLite the columns
  const duplicate = errno === 1062 || code === 'SQLITE_CONSTRAINT_UNIQUE'
  return duplicate && typeof message === 'string' && message.includes('idempotency_key')
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

/**
 * The `requests` table's owner: the log of admitted dumps, counted by the quota and
 * completed by the dumps plugin, with the idempotency keys they were admitted with. Every
 * query on the table is here.
 */
export function createRequests (db: Kysely<Database>, engine: Engine) {
  const history = createRequestHistory(db, engine)

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

  /** A transaction that writes: on SQLite the write lock is taken up front (BEGIN IMMEDIATE), so it cannot fail to upgrade halfway. */
  async function inWriteTransaction<T> (body: (trx: Executor) => Promise<T>): Promise<T> {
    if (engine === 'mysql') return await db.transaction().execute(body)
    return await db.connection().execute(async (conn) => {
      await sql`BEGIN IMMEDIATE`.execute(conn)
      try {
        const result = await body(conn)
        await sql`COMMIT`.execute(conn)
        return result
      } catch (error) {
        await sql`ROLLBACK`.execute(conn)
        throw error
      }
    })
  }

  return {
    ...history,

    /**
     * Runs `decide` in a transaction that holds the user's admission lock: on MySQL the
     * user's row, locked by primary key (locking an empty index range instead would take gap
     * locks that deadlock concurrent inserts), waiting at most `lockWaitSeconds`; on SQLite
     * the single write lock, taken up front with BEGIN IMMEDIATE.
     */
    async underUserLock<T> (userid: number, lockWaitSeconds: number, decide: (trx: Executor) => Promise<T>): Promise<T | 'no such user'> {
      return await inWriteTransaction(async (trx) => {
        if (engine === 'mysql') {
          await sql`SET SESSION innodb_lock_wait_timeout = ${sql.lit(lockWaitSeconds)}`.execute(trx)
          const locked = await trx.selectFrom('users').select('userid').where('userid', '=', userid).forUpdate().executeTakeFirst()
          if (locked === undefined) return 'no such user'
        }
        return await decide(trx)
      })
    },

    /**
     * Runs `write` in a transaction that holds the row of a dump still incomplete and still
     * held by run `run` (its `resumes` number), locked by primary key on MySQL (the single
     * write lock on SQLite); 'taken' without running it when the row was completed or
     * claimed by another run meanwhile.
     */
    async underRunLock<T> (id: number, run: number, write: (trx: Executor, userid: number) => Promise<T>): Promise<T | 'taken'> {
      return await inWriteTransaction(async (trx) => {
        let held = trx.selectFrom('requests').select('userid').where('id', '=', id).where('status', '=', 0).where('resumes', '=', run)
        if (engine === 'mysql') held = held.forUpdate()
        const row = await held.executeTakeFirst()
        return row === undefined ? 'taken' : await write(trx, row.userid)
      })
    },

    /**
     * Runs `remove` in a transaction that holds the row of one of the user's dumps, locked
     * by primary key on MySQL (the single write lock on SQLite), with whether the dump is
     * complete; 'not found' without running it when the user has no such dump (`deleted`
     * ones included only with `evenDeleted`). On MySQL the transaction reads what others
     * committed up to each statement (READ COMMITTED): a removal that waited for a row lock
     * must see what the holder of the lock wrote.
     */
    async underDumpLock<T> (userid: number, id: number, remove: (trx: Executor, complete: boolean) => Promise<T>, evenDeleted = false): Promise<T | 'not found'> {
      const body = async (trx: Executor): Promise<T | 'not found'> => {
        let held = trx.selectFrom('requests').select('status').where('id', '=', id).where('userid', '=', userid)
        if (!evenDeleted) held = held.where('deleted', '=', 0)
        if (engine === 'mysql') held = held.forUpdate()
        const row = await held.executeTakeFirst()
        return row === undefined ? 'not found' : await remove(trx, Boolean(row.status))
      }
      if (engine === 'mysql') return await db.transaction().setIsolationLevel('read committed').execute(body)
      return await inWriteTransaction(body)
    },

    /**
     * Marks a dump deleted and clears its record and idempotency key; the row stays, so
     * that the quota still counts its admission (a deletion gives no slot back).
     */
    async markDeleted (executor: Executor, id: number): Promise<void> {
      await executor.updateTable('requests').set({ deleted: 1, data: null, idempotency_key: null, batch_sha256: null }).where('id', '=', id).execute()
    },

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
     * this module), their rows are counted, at most up to `countUpTo`: enough to decide an
     * admission against that limit.
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

    /** Logs an admitted request, incomplete; returns its id. */
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

    /** Whether one of the user's dumps is complete; undefined when the user has no such dump (or deleted it, unless `evenDeleted`). */
    async isComplete (userid: number, id: number, evenDeleted = false): Promise<boolean | undefined> {
      let query = db.selectFrom('requests').select('status').where('id', '=', id).where('userid', '=', userid)
      if (!evenDeleted) query = query.where('deleted', '=', 0)
      const row = await query.executeTakeFirst()
      return row === undefined ? undefined : Boolean(row.status)
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

    /** One of the user's logged requests, as stored; undefined when not theirs or not recorded. */
    async find (userid: number, id: number): Promise<StoredRequest | undefined> {
      const row = await db.selectFrom('requests').select(['dataformat', 'data', 'status', 'retry_of'])
        .where('id', '=', id).where('userid', '=', userid).where('deleted', '=', 0).executeTakeFirst()
      if (row === undefined || row.data === null) return undefined
      return { format: row.dataformat, data: Buffer.from(row.data), complete: Boolean(row.status), retryOf: row.retry_of }
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
     * Marks every incomplete request as left behind (its heartbeat at the epoch), so that the
     * first sweep of any process takes it over; how many. Only for a database no running
     * process holds a dump of: an SQLite file, before its service's workers start.
     */
    async releaseUnfinished (): Promise<number> {
      const update = await db.updateTable('requests').set({ heartbeat_at: '1970-01-01 00:00:00' }).where('status', '=', 0).executeTakeFirst()
      return Number(update.numUpdatedRows)
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
    }
  }
}

export type Requests = ReturnType<typeof createRequests>
