import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, resolve } from 'node:path'
import { Kysely, MysqlDialect, SqliteDialect } from 'kysely'
import SQLite from 'better-sqlite3'
import type * as Mysql2 from 'mysql2'
import type { Database, Engine } from './schema.js'

// mysql2 is loaded only for a mysql:// URL: on SQLite its code would take about 16 MiB of
// the process for nothing (BENCHMARKS.md, P3). A synchronous require keeps connect() synchronous.
const requireModule = createRequire(import.meta.url)

export interface Connection {
  db: Kysely<Database>
  engine: Engine
}

/**
 * Opens the database a DATABASE_URL names: `mysql://…` through a mysql2 pool, or
 * `sqlite:<path>` (`sqlite::memory:` for a throwaway one) through better-sqlite3.
 */
export function connect (url: string, options: { poolSize?: number } = {}): Connection {
  if (url.startsWith('mysql://')) {
    const { createPool } = requireModule('mysql2') as typeof Mysql2
    const pool = createPool({
      uri: url,
      connectionLimit: options.poolSize ?? 10,
      // TIMESTAMP columns are compared with NOW() inside the database; reading them
      // back in UTC keeps JavaScript dates and database clock in agreement.
      timezone: 'Z',
      supportBigNumbers: true,
      enableKeepAlive: true
    })
    pool.on('connection', (conn) => { conn.query("SET time_zone = '+00:00'") })
    return { db: new Kysely<Database>({ dialect: new MysqlDialect({ pool }) }), engine: 'mysql' }
  }
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length)
    const memory = path === ':memory:'
    if (!memory) mkdirSync(dirname(resolve(path)), { recursive: true })
    const database = new SQLite(memory ? ':memory:' : path)
    // WAL lets readers (health checks, GET /v1/dumps) run beside the single writer;
    // busy_timeout makes another process (the other WORKERS) wait for the write lock
    // instead of failing, first, so that switching to WAL waits too when a worker restarts
    // beside others writing. The wait blocks this process's thread (better-sqlite3 is
    // synchronous), but only for as long as another holds the lock: every write
    // transaction runs its statements back to back, without waiting on anything else.
    database.pragma('busy_timeout = 5000')
    database.pragma('journal_mode = WAL')
    database.pragma('foreign_keys = ON')
    return { db: new Kysely<Database>({ dialect: new SqliteDialect({ database }) }), engine: 'sqlite' }
  }
  throw new Error(`unsupported database URL (expected mysql://… or sqlite:…): ${url.replace(/\/\/[^@]*@/, '//***@')}`)
}
