import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// Outcomes are recorded per image as they happen, so a dump interrupted by a crash is
// resumed rather than failed: dump_images holds one row per finished image, keyed by
// (request, image), and requests.resumes numbers the runs of a dump so that a run taken
// over by another instance cannot write over the one that took it.
//
// The image's result is stored as JSON bytes rather than as columns: it is read back only
// whole (to show progress and to build the final record), and its shape (a success's
// fields, or an error of one of several kinds) is the API's, which may grow.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  let table = db.schema.createTable('dump_images')
    .addColumn('request_id', 'integer', (c) => c.notNull().references('requests.id').onDelete('cascade'))
    .addColumn('image_id', 'integer', (c) => c.notNull())
    .addColumn('status', 'varchar(7)', (c) => c.notNull())
    // an error message may quote a URL of up to 8 KiB, escaped: more than a BLOB's 64 KiB is possible
    .addColumn('result', mysql ? sql`MEDIUMBLOB` : 'blob', (c) => c.notNull())
    .addPrimaryKeyConstraint('dump_images_pk', ['request_id', 'image_id'])
  // the rows are only ever reached by their key: store them in it
  if (!mysql) table = table.modifyEnd(sql`WITHOUT ROWID`)
  await table.execute()

  await db.schema.alterTable('requests')
    .addColumn('resumes', 'integer', (c) => c.notNull().defaultTo(0))
    .execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.dropTable('dump_images').execute()
  await db.schema.alterTable('requests').dropColumn('resumes').execute()
}
