import t from 'tap'
import { sql } from 'kysely'
import { connect } from '../../db/connect.js'
import { migrateToLatest } from '../../db/migrate.js'
import type { Engine } from '../../db/schema.js'
import { createQuotaService, type Admission } from '../../plugins/quota.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { seedHistory } from '../helpers/history.js'

// The quota's answer does not depend on how much history a user has, and getting it reads
// no more of that history as it grows. The large history is seeded in one statement; its
// size is what keeps this file within about 20 s per engine on two busy cores (a million
// rows on both engines: `node --import tsx bench/micro/admission-history.ts`).
const LARGE: Record<Engine, number> = {
  sqlite: Number(process.env.QUOTA_HISTORY_ROWS ?? 300_000),
  mysql: Number(process.env.QUOTA_HISTORY_ROWS ?? 100_000)
}
const record = { dataformat: 'json' as const, data: null }

/** What a client sees of an admission, relative to the history it had: comparable across sizes. */
function seen (admission: Admission, history: number) {
  return {
    admitted: admission.admitted,
    current: admission.current - history,
    replay: admission.replayOf !== undefined,
    // the oldest row of the window is the same age whatever the size: 29 minutes left of its hour
    ttlMinutes: Math.round(admission.ttlMs / 60_000)
  }
}

/**
 * A user with `history` admissions in the last 30 minutes and as many again older than
 * the window, on a plan 3 above it; then four admissions (the fourth refused), an
 * idempotent replay, and the usage.
 */
async function scenario (engine: Engine, history: number, numbered: boolean) {
  const database = await createTestDatabase(engine)
  const { db } = connect(database.url, { poolSize: 1 })
  try {
    await migrateToLatest(db)
    const user = await db.insertInto('users').values({ username: 'heavy', plan: 'big' }).executeTakeFirstOrThrow()
    const userid = Number(user.insertId)
    await seedHistory(db, engine, userid, history, { spanSeconds: 40 * 86400, endSecondsAgo: 3700, numbered })
    await seedHistory(db, engine, userid, history, { spanSeconds: 1800, endSecondsAgo: 60, numbered })
    const limit = history + 3
    const quota = createQuotaService(db, engine, { plans: { big: limit } })
    const keyed = { ...record, idempotency: { key: 'k-1', batchSha256: Buffer.alloc(32, 1) } }
    const rowsRead = await handlerReads(db, engine)
    const answers = [
      await quota.admit(userid, limit, record),
      await quota.admit(userid, limit, keyed),
      await quota.admit(userid, limit, keyed),
      await quota.admit(userid, limit, record),
      await quota.admit(userid, limit, record)
    ]
    const read = (await handlerReads(db, engine)) - rowsRead
    const usage = await quota.usage({ userid, plan: 'big' } as never)
    return {
      answers: answers.map((a) => seen(a, history)),
      usage: { used: usage.used - history, remaining: usage.remaining, resetMinutes: Math.round(usage.resetSeconds / 60) },
      read
    }
  } finally {
    await db.destroy()
    await database.drop()
  }
}

/** MySQL: the index and table rows this session has read so far (its Handler_read_* counters). */
async function handlerReads (db: ReturnType<typeof connect>['db'], engine: Engine): Promise<number> {
  if (engine !== 'mysql') return 0
  const { rows } = await sql<{ Variable_name: string, Value: string }>`SHOW SESSION STATUS LIKE 'Handler_read%'`.execute(db)
  return rows.reduce((sum, row) => sum + Number(row.Value), 0)
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the same admissions with ${LARGE[engine].toLocaleString('en-US')} rows of history as with 100`, async (t) => {
    const small = await scenario(engine, 100, true)
    const large = await scenario(engine, LARGE[engine], true)
    t.same(small.answers, [
      { admitted: true, current: 1, replay: false, ttlMinutes: 29 },
      { admitted: true, current: 2, replay: false, ttlMinutes: 29 },
      { admitted: false, current: 2, replay: true, ttlMinutes: 29 },
      { admitted: true, current: 3, replay: false, ttlMinutes: 29 },
      { admitted: false, current: 4, replay: false, ttlMinutes: 29 }
    ], 'three admitted up to the limit, a replay that takes no slot, one refused')
    t.same(small.usage, { used: 3, remaining: 0, resetMinutes: 29 }, 'the usage counts the window exactly')
    t.same(large.answers, small.answers, 'the answers do not depend on the history')
    t.same(large.usage, small.usage, 'nor does the usage')
    if (engine === 'mysql') {
      // read through one pooled connection: these are the admissions' own reads
      t.ok(large.read < 200, `five admissions read ${large.read} index entries and rows past ${LARGE[engine]} rows of history (${small.read} past 100)`)
    }
  })

  t.test(`${engine}: rows written without an admission number are counted, exactly up to the limit`, async (t) => {
    // rows from before the numbering, or written around db/requests.ts
    const unnumbered = await scenario(engine, 100, false)
    const numbered = await scenario(engine, 100, true)
    t.same(unnumbered.answers, numbered.answers)
    t.same(unnumbered.usage, numbered.usage)
  })
}
