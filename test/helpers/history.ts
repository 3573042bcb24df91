import { sql, type Kysely } from 'kysely'
import type { Database, Engine } from '../../db/schema.js'

/**
 * Writes `rows` past admissions of a user in one INSERT…SELECT (a million in seconds), as
 * the quota would have: numbered after the user's newest admission, complete, spread
 * evenly with the oldest `spanSeconds` ago and the newest `endSecondsAgo` ago, in
 * admission order. Numbers come from a 1000 × 1000 cross join rather than a recursive CTE
 * a million deep (MariaDB stops recursion at 1000 by default).
 */
export async function seedHistory (db: Kysely<Database>, engine: Engine, userid: number, rows: number, options: { spanSeconds: number, endSecondsAgo?: number, numbered?: boolean }): Promise<void> {
  if (rows <= 0) return
  if (rows > 1_000_000) throw new RangeError('seedHistory writes at most 1,000,000 rows at a time')
  const { spanSeconds, endSecondsAgo = 0, numbered = true } = options
  const newest = await db.selectFrom('requests').select((eb) => eb.fn.max('user_seq').as('n')).where('userid', '=', userid).executeTakeFirst()
  const base = Number(newest?.n ?? 0)
  // row i (1…rows) is (rows - i) steps older than the newest; steps in microseconds
  const stepUs = Math.floor(spanSeconds * 1e6 / rows)
  const ago = sql`((${sql.lit(rows)} - i) * ${sql.lit(stepUs)} + ${sql.lit(Math.round(endSecondsAgo * 1e6))})`
  const at = engine === 'mysql'
    ? sql`CURRENT_TIMESTAMP(3) - INTERVAL ${ago} MICROSECOND`
    : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', '-' || (${ago} / 1000000.0) || ' seconds')`
  const seq = numbered ? sql`${sql.lit(base)} + i` : sql`NULL`
  await sql`INSERT INTO requests (userid, dataformat, data, status, created_at, heartbeat_at, user_seq)
    WITH RECURSIVE k(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM k WHERE j < 999),
    n(i) AS (SELECT a.j * 1000 + b.j + 1 FROM k a CROSS JOIN k b)
    SELECT ${userid}, 'json', NULL, 1, ${at}, ${at}, ${seq} FROM n WHERE i <= ${sql.lit(rows)}`.execute(db)
}
