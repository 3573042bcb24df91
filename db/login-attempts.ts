import { sql, type Kysely } from 'kysely'
import { msUntil, now, secondsAgo } from './engine.js'
import type { Database, Engine } from './schema.js'

/** One counted attempt: how many the key has made in its window, and when that window ends. */
export interface Hit {
  attempts: number
  resetMs: number
}

/**
 * The throttle's store contract, in the spirit of @fastify/rate-limit's stores: `hit`
 * counts one attempt and answers with the count *including it*, atomically, so that a
 * burst of simultaneous attempts is numbered 1, 2, 3… and cannot pass together.
 */
export interface ThrottleStore {
  hit: (key: Buffer, windowSeconds: number) => Promise<Hit>
  /** Forgets a key (a successful login clears its username's count). */
  reset: (key: Buffer) => Promise<void>
  /** Gives one attempt back (a successful login does not count against its address). */
  refund: (key: Buffer) => Promise<void>
  /** Removes up to `limit` rows whose window ended; returns how many. */
  sweep: (windowSeconds: number, limit?: number) => Promise<number>
}

/**
 * The `login_attempts` table's owner: a fixed window per key, opened by the key's first
 * attempt. SQLite answers the upsert with RETURNING under its single writer; MySQL
 * upserts and reads back in one transaction, the upsert's row lock ordering concurrent
 * hits on every instance.
 */
export function createLoginAttempts (db: Kysely<Database>, engine: Engine): ThrottleStore {
  const expired = (windowSeconds: number) => sql<boolean>`window_start <= ${secondsAgo(engine, windowSeconds)}`

  return {
    async hit (key, windowSeconds) {
      const reset = msUntil(engine, sql`window_start`, windowSeconds)
      if (engine === 'sqlite') {
        const { rows } = await sql<{ attempts: number, ms: number }>`
          INSERT INTO login_attempts (throttle_key, attempts, window_start) VALUES (${key}, 1, ${now(engine)})
          ON CONFLICT (throttle_key) DO UPDATE SET
            attempts = CASE WHEN ${expired(windowSeconds)} THEN 1 ELSE attempts + 1 END,
            window_start = CASE WHEN ${expired(windowSeconds)} THEN ${now(engine)} ELSE window_start END
          RETURNING attempts, ${reset} AS ms`.execute(db)
        return { attempts: Number(rows[0]!.attempts), resetMs: Math.max(0, Number(rows[0]!.ms)) }
      }
      return await db.transaction().execute(async (trx) => {
        // MySQL evaluates the assignments left to right: attempts must be decided while
        // window_start still holds the old value
        await sql`
          INSERT INTO login_attempts (throttle_key, attempts, window_start) VALUES (${key}, 1, ${now(engine)})
          ON DUPLICATE KEY UPDATE
            attempts = IF(${expired(windowSeconds)}, 1, attempts + 1),
            window_start = IF(${expired(windowSeconds)}, ${now(engine)}, window_start)`.execute(trx)
        const { rows } = await sql<{ attempts: number, ms: number }>`
          SELECT attempts, ${reset} AS ms FROM login_attempts WHERE throttle_key = ${key}`.execute(trx)
        return { attempts: Number(rows[0]!.attempts), resetMs: Math.max(0, Number(rows[0]!.ms)) }
      })
    },

    async reset (key) {
      await db.deleteFrom('login_attempts').where('throttle_key', '=', key).execute()
    },

    async refund (key) {
      await db.updateTable('login_attempts').set((eb) => ({ attempts: eb('attempts', '-', 1) }))
        .where('throttle_key', '=', key).where('attempts', '>', 0).execute()
    },

    async sweep (windowSeconds, limit = 1000) {
      // bounded, so a flood of keys is cleared in slices rather than in one long lock
      const stale = db.selectFrom('login_attempts').select('throttle_key')
        .where('window_start', '<=', secondsAgo(engine, windowSeconds)).limit(limit)
      const keys = (await stale.execute()).map((row) => row.throttle_key)
      if (keys.length === 0) return 0
      const result = await db.deleteFrom('login_attempts').where('throttle_key', 'in', keys)
        .where('window_start', '<=', secondsAgo(engine, windowSeconds)).executeTakeFirst()
      return Number(result.numDeletedRows)
    }
  }
}
