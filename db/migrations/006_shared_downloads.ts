import type { Kysely } from 'kysely'

// A URL that appears more than once in a dump is downloaded once (plugins/dumps/dump-run.ts):
// the other images with that URL get the same outcome and no file of their own.
// dump_images.stored_as names the image of the same dump whose file holds their bytes;
// NULL, as for every row recorded before, means the image's own file.
//
// A column rather than a field in the JSON result: the result is what the answer shows,
// and which file holds the bytes is the service's business, not the client's.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  await db.schema.alterTable('dump_images').addColumn('stored_as', 'integer').execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.alterTable('dump_images').dropColumn('stored_as').execute()
}
