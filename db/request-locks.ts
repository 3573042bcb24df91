import { sql, type Kysely } from 'kysely'
import type { Executor } from './requests.js'
import type { Database, Engine } from './schema.js'

/**
 * The write transactions of dumps, each holding the lock that orders it against the others:
 * a user's admission lock, the lock of a dump's row held by its run, the lock of a dump being
 * removed. Owns no table and writes nothing itself: it only reads (and on MySQL locks) the
 * rows it holds, then runs the caller's body, which writes through the tables' owners
 * (db/requests.ts, db/dump-images.ts, db/stored-objects.ts) on the transaction it is given.
 */
export function createRequestLocks (db: Kysely<Database>, engine: Engine) {
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
    }
  }
}

export type RequestLocks = ReturnType<typeof createRequestLocks>
