/**
 * What one quota admission's count costs as a user's history grows: 0, 10k, 100k and 1 M
 * rows inside the window of one user (the worst case: a plan whose limit no history
 * reaches), against the same count done the way it was before admissions were numbered
 * (COUNT and MIN over the window's rows), on SQLite and, with MYSQL_URL, on MariaDB/MySQL.
 * Also: the user's rows all older than the window, and another user's history.
 *
 *   [MYSQL_URL=mysql://root@127.0.0.1:3306/test] node --import tsx bench/micro/admission-history.ts [--max 1000000]
 */
import { parseArgs } from 'node:util'
import { sql, type Kysely } from 'kysely'
import { connect } from '../../db/connect.js'
import { secondsAgo } from '../../db/engine.js'
import { migrateToLatest } from '../../db/migrate.js'
import { createRequestLookups } from '../../db/request-lookups.js'
import type { Database, Engine } from '../../db/schema.js'
import { createTestDatabase } from '../../test/helpers/db.js'
import { seedHistory } from '../../test/helpers/history.js'

const { values } = parseArgs({ options: { max: { type: 'string', default: '1000000' } } })
const sizes = [0, 10_000, 100_000, 1_000_000].filter((n) => n <= Number(values.max))

/** The count as it was: every row of the window read. */
async function oldCount (db: Kysely<Database>, engine: Engine, userid: number): Promise<number> {
  const row = await db.selectFrom('requests').select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('created_at').as('oldest')])
    .where('userid', '=', userid).where('created_at', '>', secondsAgo(engine, 3600)).executeTakeFirstOrThrow()
  return Number(row.count)
}

async function timed (reps: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 3; i++) await fn()
  const started = performance.now()
  for (let i = 0; i < reps; i++) await fn()
  return (performance.now() - started) / reps
}

async function main (): Promise<void> {
  const engines: Engine[] = process.env.MYSQL_URL === undefined ? ['sqlite'] : ['sqlite', 'mysql']
  for (const engine of engines) {
    const database = await createTestDatabase(engine)
    const { db } = connect(database.url)
    try {
      await migrateToLatest(db)
      await db.insertInto('users').values([{ username: 'busy', plan: 'gold' }, { username: 'old', plan: 'gold' }, { username: 'other', plan: 'gold' }]).execute()
      const lookups = createRequestLookups(db, engine)
      let seeded = 0
      for (const n of sizes) {
        const seedStart = performance.now()
        // user 1: in the window; user 2: the same number of rows, all older than it
        await seedHistory(db, engine, 1, n - seeded, { spanSeconds: 1800, endSecondsAgo: 0 })
        await seedHistory(db, engine, 2, n - seeded, { spanSeconds: 30 * 86400, endSecondsAgo: 7200 })
        const seedMs = performance.now() - seedStart
        seeded = n
        const reps = n >= 1_000_000 ? 5 : n >= 100_000 ? 20 : 200
        const counted = await lookups.window(db, 1, 3600, 1e9)
        if (counted.count !== n) throw new Error(`window counted ${counted.count}, expected ${n}`)
        const now = await timed(200, () => lookups.window(db, 1, 3600, 1e9))
        const before = await timed(reps, () => oldCount(db, engine, 1))
        const old = await timed(200, () => lookups.window(db, 2, 3600, 1e9))
        const other = await timed(200, () => lookups.window(db, 3, 3600, 1e9))
        console.log(`${engine}: ${n.toLocaleString('en-US')} rows (seeded in ${(seedMs / 1000).toFixed(1)} s): in the window ${now.toFixed(3)} ms (counted row by row: ${before.toFixed(3)} ms); all older than the window ${old.toFixed(3)} ms; another user's ${other.toFixed(3)} ms`)
      }
      const { rows } = await sql<{ n: number }>`SELECT COUNT(*) AS n FROM requests`.execute(db)
      console.log(`${engine}: ${Number(rows[0]!.n).toLocaleString('en-US')} rows in requests at the end`)
    } finally {
      await db.destroy()
      await database.drop()
    }
  }
}

main().catch((error: unknown) => { console.error(error); process.exit(1) })
