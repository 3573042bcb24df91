import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// A dump may carry the client's Idempotency-Key. The unique index on (userid,
// idempotency_key) is what makes a key name one dump per user: the admission inserts the
// key with the row, and a second admission with the same key fails on the index, on
// every instance sharing the database. NULL keys (dumps sent without one) never collide.
//
// Keys are compared exactly: on MySQL the column is ASCII with a binary collation (the
// default collations fold case, so `abc` and `ABC` would be one key); a valid key is
// visible ASCII only, so nothing is lost, and it has no spaces, so the collation's
// disregard of trailing spaces never applies. SQLite's default BINARY collation is exact.
//
// batch_sha256 is the SHA-256 of the canonical batch, kept beside the key to tell a
// replay (the same batch) from a reuse of the key for another batch.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  // one column per statement: SQLite adds one at a time
  await db.schema.alterTable('requests')
    .addColumn('idempotency_key', mysql ? sql`VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin` : 'text')
    .execute()
  await db.schema.alterTable('requests')
    .addColumn('batch_sha256', mysql ? sql`BINARY(32)` : 'blob')
    .execute()
  await db.schema.createIndex('requests_userid_idempotency_key').on('requests')
    .columns(['userid', 'idempotency_key']).unique().execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.dropIndex('requests_userid_idempotency_key').on('requests').execute()
  await db.schema.alterTable('requests').dropColumn('batch_sha256').execute()
  await db.schema.alterTable('requests').dropColumn('idempotency_key').execute()
}
