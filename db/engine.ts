import { MysqlAdapter, sql, type Kysely, type RawBuilder } from 'kysely'
import type { Engine } from './schema.js'

// Kysely builds portable queries, but time arithmetic and row locks differ between
// the two engines; these few helpers are the only places the difference shows.

export function engineOf (db: Kysely<any>): Engine { // eslint-disable-line @typescript-eslint/no-explicit-any -- any schema
  return db.getExecutor().adapter instanceof MysqlAdapter ? 'mysql' : 'sqlite'
}

/** Current database time with millisecond precision, in the column's storage format. */
export function now (engine: Engine): RawBuilder<string> {
  return engine === 'mysql'
    ? sql<string>`CURRENT_TIMESTAMP(3)`
    : sql<string>`strftime('%Y-%m-%d %H:%M:%f', 'now')`
}

/** Database time `seconds` ago, comparable with `created_at`. */
export function secondsAgo (engine: Engine, seconds: number): RawBuilder<string> {
  return engine === 'mysql'
    ? sql<string>`(CURRENT_TIMESTAMP(3) - INTERVAL ${sql.lit(seconds)} SECOND)`
    : sql<string>`strftime('%Y-%m-%d %H:%M:%f', 'now', ${sql.lit(`-${seconds} seconds`)})`
}

/** Milliseconds from the database's now until `column` + `seconds`. */
export function msUntil (engine: Engine, column: RawBuilder<unknown>, seconds: number): RawBuilder<number> {
  return engine === 'mysql'
    ? sql<number>`TIMESTAMPDIFF(MICROSECOND, CURRENT_TIMESTAMP(3), ${column} + INTERVAL ${sql.lit(seconds)} SECOND) DIV 1000`
    : sql<number>`CAST(ROUND((julianday(${column}) + ${sql.lit(seconds)} / 86400.0 - julianday('now')) * 86400000) AS INTEGER)`
}
