import type { Kysely } from 'kysely'

// A dump costs the same on day 100 as on day 1.
//
// requests.user_seq numbers a user's admissions 1, 2, 3, … in the order they were admitted
// (under the user's admission lock, so no two share a number and none is skipped). The
// quota then reads the count of a window from two index entries instead of counting its
// rows: the newest number minus the number of the window's oldest row, plus one. The index
// (userid, user_seq, created_at) finds the newest number, and the window's rows written
// without a number (rows from before this migration, or written around db/requests.ts):
// while there are any, the quota counts rows instead, at most up to the plan's limit.
//
// requests_created_at lets the retention sweep find the oldest records of all users
// without reading the rest.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  await db.schema.alterTable('requests').addColumn('user_seq', 'integer').execute()
  await db.schema.createIndex('requests_userid_user_seq').on('requests').columns(['userid', 'user_seq', 'created_at']).execute()
  await db.schema.createIndex('requests_created_at').on('requests').column('created_at').execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.dropIndex('requests_created_at').on('requests').execute()
  await db.schema.dropIndex('requests_userid_user_seq').on('requests').execute()
  await db.schema.alterTable('requests').dropColumn('user_seq').execute()
}
