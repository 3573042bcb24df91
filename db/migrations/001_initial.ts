import { sql, type Kysely } from 'kysely'
import { engineOf } from '../engine.js'

// The brief's four tables, made valid: requests gets its own primary key, a creation
// time indexed with the user for the quota window, and a blob large enough for the
// largest accepted batch; passwordhash is wide enough for a PHC string.

export async function up (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- migrations must not depend on the current schema type
  const mysql = engineOf(db) === 'mysql'
  const timestamp = mysql ? sql`TIMESTAMP(3)` : sql`TEXT`
  const defaultNow = mysql ? sql`CURRENT_TIMESTAMP(3)` : sql`(strftime('%Y-%m-%d %H:%M:%f', 'now'))`

  await db.schema.createTable('users')
    .addColumn('userid', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('username', 'varchar(50)', (c) => c.notNull().unique())
    .addColumn('plan', 'varchar(10)', (c) => c.notNull())
    .execute()

  await db.schema.createTable('authentication')
    .addColumn('userid', 'integer', (c) => c.primaryKey().references('users.userid').onDelete('cascade'))
    .addColumn('passwordhash', 'varchar(255)', (c) => c.notNull())
    .execute()

  await db.schema.createTable('tokens')
    .addColumn('userid', 'integer', (c) => c.primaryKey().references('users.userid').onDelete('cascade'))
    .addColumn('user_secret', mysql ? sql`VARBINARY(64)` : 'blob', (c) => c.notNull())
    .addColumn('last_updated', timestamp, (c) => c.notNull().defaultTo(defaultNow))
    .execute()

  await db.schema.createTable('requests')
    .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
    .addColumn('userid', 'integer', (c) => c.notNull().references('users.userid').onDelete('cascade'))
    .addColumn('dataformat', 'varchar(4)', (c) => c.notNull())
    .addColumn('data', mysql ? sql`LONGBLOB` : 'blob')
    .addColumn('status', 'boolean', (c) => c.notNull().defaultTo(false))
    .addColumn('created_at', timestamp, (c) => c.notNull().defaultTo(defaultNow))
    // refreshed while a dump is processed, so a row left incomplete by a crashed
    // instance can be told apart from one another instance is still working on
    .addColumn('heartbeat_at', timestamp, (c) => c.notNull().defaultTo(defaultNow))
    .execute()

  await db.schema.createIndex('requests_userid_created_at').on('requests').columns(['userid', 'created_at']).execute()
  await db.schema.createIndex('requests_status').on('requests').column('status').execute()
}

export async function down (db: Kysely<any>): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- see up()
  for (const table of ['requests', 'tokens', 'authentication', 'users']) {
    await db.schema.dropTable(table).execute()
  }
}
