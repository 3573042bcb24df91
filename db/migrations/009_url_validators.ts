import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// A URL a user stored before is revalidated rather than downloaded again: the request
// carries If-None-Match / If-Modified-Since from the validators the origin sent with the
// bytes, and a 304 reuses those bytes (plugins/dumps/dump-run.ts, db/url-validators.ts).
//
// One row per user and URL, keyed by the SHA-256 of the URL as the dumps compare URLs
// (plugins/dumps/same-url.ts: parsed, fragment dropped), so that a long URL costs 32 bytes.
// The row names the image whose outcome holds the bytes' description (request_id,
// image_id: its dump_images row, which also proves the record still exists); that row's
// sha256 names the user's stored object (stored_objects, 008), whose key is where the bytes
// are. The validators are the origin's header values as sent. A row is only written after
// that image's outcome was recorded.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  await db.schema.createTable('url_validators')
    .addColumn('userid', 'integer', (c) => c.notNull())
    .addColumn('url_key', mysql ? sql`BINARY(32)` : 'blob', (c) => c.notNull())
    .addColumn('etag', 'varchar(256)')
    .addColumn('last_modified', 'varchar(64)')
    .addColumn('request_id', 'integer', (c) => c.notNull())
    .addColumn('image_id', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('url_validators_pk', ['userid', 'url_key'])
    .execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.dropTable('url_validators').execute()
}
