import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// Identical bytes are stored once per user (content-addressed).
//
// stored_objects has one row per (user, SHA-256): the key of the object that holds those
// bytes, with what is known of them. An object's key is the one it was created under (the
// first dump of the user that downloaded them, lib/storage-layout.ts); object storage
// cannot rename, so it stays.
//
// dump_images.sha256 and dump_images.object_key say where a success's bytes are. NULL on
// rows recorded before: their bytes are in their own dump's folder (or, with stored_as,
// in another image's of the same dump). An object is referenced while any SUCCESS row of
// its user has its sha256; the index on sha256 answers that (and a delete's "who else
// has these bytes") without reading a user's other dumps.
//
// requests.deleted marks a dump removed by DELETE /v1/dumps/{id}: the row stays, without
// its record, because the quota counts admissions (user_seq), and a deletion gives no
// admission back.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  let table = db.schema.createTable('stored_objects')
    .addColumn('userid', 'integer', (c) => c.notNull())
    .addColumn('sha256', 'char(64)', (c) => c.notNull())
    .addColumn('object_key', 'varchar(512)', (c) => c.notNull())
    .addColumn('content_type', 'varchar(64)', (c) => c.notNull())
    .addColumn('bytes', 'bigint', (c) => c.notNull())
    .addColumn('width', 'integer')
    .addColumn('height', 'integer')
    .addPrimaryKeyConstraint('stored_objects_pk', ['userid', 'sha256'])
  if (!mysql) table = table.modifyEnd(sql`WITHOUT ROWID`)
  await table.execute()
  // the objects of one dump's folder that are still referenced (a deletion keeps those)
  await db.schema.createIndex('stored_objects_key').on('stored_objects').columns(['userid', 'object_key']).execute()

  await db.schema.alterTable('dump_images').addColumn('sha256', 'char(64)').execute()
  await db.schema.alterTable('dump_images').addColumn('object_key', 'varchar(512)').execute()
  await db.schema.createIndex('dump_images_sha256').on('dump_images').column('sha256').execute()

  await db.schema.alterTable('requests').addColumn('deleted', 'integer', (c) => c.notNull().defaultTo(0)).execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.alterTable('requests').dropColumn('deleted').execute()
  await db.schema.dropIndex('dump_images_sha256').on('dump_images').execute()
  await db.schema.alterTable('dump_images').dropColumn('object_key').execute()
  await db.schema.alterTable('dump_images').dropColumn('sha256').execute()
  await db.schema.dropTable('stored_objects').execute()
}
