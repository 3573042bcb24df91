import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// Several processes may run dumps from one database: the workers of one service (WORKERS),
// and instances on other machines (MySQL). requests.run_by names the process that runs an
// incomplete dump (its admission, or the resumption that took it over), so that when a
// worker dies its supervisor can have another worker resume exactly that worker's dumps at
// once, instead of waiting for their heartbeats to go stale, and without touching the
// dumps of the workers still alive. NULL on rows from before, which the heartbeat alone
// recovers, as before.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  await db.schema.alterTable('requests').addColumn('run_by', mysql ? sql`VARCHAR(128)` : 'text').execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  await db.schema.alterTable('requests').dropColumn('run_by').execute()
}
