import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { createConnection } from 'mysql2/promise'
import type { Kysely } from 'kysely'
import { connect } from '../../db/connect.js'
import { migrateToLatest } from '../../db/migrate.js'
import type { Database, Engine } from '../../db/schema.js'

export interface TestDatabase {
  engine: Engine
  url: string
  drop: () => Promise<void>
}

/** The engines a test file runs against: SQLite always, MariaDB/MySQL when MYSQL_URL is set. */
export function enginesUnderTest (t: { comment: (message: string) => void }): Engine[] {
  if (process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === '') {
    t.comment('MySQL tests skipped: MYSQL_URL is not set (e.g. MYSQL_URL=mysql://root@127.0.0.1:3306/test)')
    return ['sqlite']
  }
  return ['sqlite', 'mysql']
}

/** A fresh, empty database of its own for one test: a temporary SQLite file or a new MySQL database. */
export async function createTestDatabase (engine: Engine): Promise<TestDatabase> {
  if (engine === 'sqlite') {
    const dir = await mkdtemp(join(tmpdir(), 'image-dump-db-'))
    return { engine, url: `sqlite:${join(dir, 'test.db')}`, drop: async () => { await rm(dir, { recursive: true, force: true }) } }
  }
  const base = new URL(process.env.MYSQL_URL!)
  const name = `image_dump_test_${process.pid}_${randomBytes(4).toString('hex')}`
  const admin = await createConnection({ uri: base.toString() })
  await admin.query(`CREATE DATABASE \`${name}\``)
  await admin.end()
  const url = new URL(base)
  url.pathname = `/${name}`
  return {
    engine,
    url: url.toString(),
    drop: async () => {
      const conn = await createConnection({ uri: base.toString() })
      await conn.query(`DROP DATABASE IF EXISTS \`${name}\``)
      await conn.end()
    }
  }
}

/**
 * A fresh database of `engine`, migrated to the latest schema, and a connection to it; the
 * connection is closed and the database dropped when `t` ends.
 */
export async function migratedTestDatabase (t: { teardown: (fn: () => unknown) => void }, engine: Engine): Promise<{ db: Kysely<Database>, database: TestDatabase }> {
  const database = await createTestDatabase(engine)
  t.teardown(database.drop)
  const { db } = connect(database.url)
  t.teardown(() => db.destroy())
  await migrateToLatest(db)
  return { db, database }
}
