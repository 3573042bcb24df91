import { sql, type Kysely } from 'kysely'

// Three v2 features read what v1 rows did not keep:
//
// - The events stream (GET /v1/dumps/{id}/events) gives every outcome an id that only
//   grows, so that a client resuming with Last-Event-ID misses nothing and sees nothing
//   twice. Images finish out of order, so the image id cannot be that: dump_images.seq
//   numbers a dump's outcomes in the order they were recorded (unique per dump). Rows
//   recorded before this version are numbered by image id, which is an order they could
//   have been recorded in; a dump running across the upgrade numbers its next outcomes
//   after them.
// - The list of a user's dumps (GET /v1/dumps) shows each dump's status and counts
//   without reading its record, which can be megabytes: requests.images is set at
//   admission, and outcome, succeeded and failed when the dump completes. Rows completed
//   before this version have them NULL; the list reads their record instead.
// - A retry (POST /v1/dumps/{id}/retry) names the dump it retries: requests.retry_of.
//
// The (userid, id) index serves the list, newest first, page after page from a cursor,
// without sorting a user's history.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  await db.schema.alterTable('dump_images').addColumn('seq', 'integer', (c) => c.notNull().defaultTo(0)).execute()
  await sql`UPDATE dump_images SET seq = image_id`.execute(db)
  await db.schema.createIndex('dump_images_request_seq').on('dump_images').columns(['request_id', 'seq']).unique().execute()

  // one column per statement: SQLite adds one at a time
  await db.schema.alterTable('requests').addColumn('images', 'integer').execute()
  await db.schema.alterTable('requests').addColumn('outcome', 'varchar(7)').execute()
  await db.schema.alterTable('requests').addColumn('succeeded', 'integer').execute()
  await db.schema.alterTable('requests').addColumn('failed', 'integer').execute()
  await db.schema.alterTable('requests').addColumn('retry_of', 'integer').execute()
  await db.schema.createIndex('requests_userid_id').on('requests').columns(['userid', 'id']).execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.dropIndex('requests_userid_id').on('requests').execute()
  for (const column of ['retry_of', 'failed', 'succeeded', 'outcome', 'images']) {
    await db.schema.alterTable('requests').dropColumn(column).execute()
  }
  await db.schema.dropIndex('dump_images_request_seq').on('dump_images').execute()
  await db.schema.alterTable('dump_images').dropColumn('seq').execute()
}
