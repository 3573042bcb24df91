import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// Usernames are compared byte for byte on both engines. SQLite's default BINARY collation
// already does; MySQL's default collations fold case and accents and (PAD SPACE) ignore
// trailing spaces, so `BoB`, `bob ` and `bób` all found `bob`. The existing unique index was
// built under the folding collation, so no two rows can collide when it becomes binary.
//
// login_attempts is the login throttle's store: one row per throttled key (a SHA-256 of
// "who is trying"), counted atomically before a password is checked, so that every
// instance sharing the database shares the count.

/** MariaDB's binary no-pad collation, or MySQL 8's; both compare exactly, trailing spaces included. */
async function exactCollation (db: Kysely<any>): Promise<string> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const { rows } = await sql<{ v: string }>`SELECT VERSION() AS v`.execute(db)
  return /mariadb/i.test(rows[0]?.v ?? '') ? 'utf8mb4_nopad_bin' : 'utf8mb4_0900_bin'
}

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see above
  const mysql = engineOf(db) === 'mysql'
  if (mysql) {
    const collation = await exactCollation(db)
    await sql`ALTER TABLE users MODIFY username VARCHAR(50) CHARACTER SET utf8mb4 COLLATE ${sql.raw(collation)} NOT NULL`.execute(db)
  }
  const timestamp = mysql ? sql`TIMESTAMP(3)` : sql`TEXT`
  await db.schema.createTable('login_attempts')
    .addColumn('throttle_key', mysql ? sql`BINARY(32)` : 'blob', (c) => c.primaryKey())
    .addColumn('attempts', 'integer', (c) => c.notNull())
    .addColumn('window_start', timestamp, (c) => c.notNull())
    .execute()
  await db.schema.createIndex('login_attempts_window_start').on('login_attempts').column('window_start').execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see above
  await db.schema.dropTable('login_attempts').execute()
  if (engineOf(db) === 'mysql') {
    await sql`ALTER TABLE users MODIFY username VARCHAR(50) NOT NULL`.execute(db)
  }
}
