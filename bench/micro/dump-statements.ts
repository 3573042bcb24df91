/**
 * The database work of one dump, without HTTP or downloads: the admission (quota), its
 * outcomes recorded in one batch of 20, the final record written, then the record read
 * back; timed with an empty history and with 1 M earlier dumps of the same user (in the
 * quota's hour), on SQLite and, with MYSQL_URL, on MariaDB/MySQL.
 *
 *   [MYSQL_URL=mysql://root@127.0.0.1:3306/test] node --import tsx bench/micro/dump-statements.ts [--rows 1000000] [--dumps 300]
 */
import { parseArgs } from 'node:util'
import { connect } from '../../db/connect.js'
import { createDumpImages } from '../../db/dump-images.js'
import { migrateToLatest } from '../../db/migrate.js'
import { createRequestLookups } from '../../db/request-lookups.js'
import { createRequests } from '../../db/requests.js'
import type { Engine } from '../../db/schema.js'
import { createQuotaService } from '../../plugins/quota.js'
import { createTestDatabase } from '../../test/helpers/db.js'
import { seedHistory } from '../../test/helpers/history.js'
import type { ImageResult } from '../../schemas/dump.js'

const { values } = parseArgs({ options: { rows: { type: 'string', default: '1000000' }, dumps: { type: 'string', default: '300' } } })
const rows = Number(values.rows)
const dumps = Number(values.dumps)

async function perDump (engine: Engine, history: number): Promise<number> {
  const database = await createTestDatabase(engine)
  const { db } = connect(database.url)
  try {
    await migrateToLatest(db)
    const user = await db.insertInto('users').values({ username: 'u', plan: 'big' }).executeTakeFirstOrThrow()
    const userid = Number(user.insertId)
    await seedHistory(db, engine, userid, history, { spanSeconds: 1800, endSecondsAgo: 60 })
    const quota = createQuotaService(db, engine, { plans: { big: 1e9 } })
    const requests = createRequests(db, engine)
    const lookups = createRequestLookups(db, engine)
    const images = createDumpImages(db, engine)
    const results: ImageResult[] = Array.from({ length: 20 }, (_, i) => ({ imageId: i + 1, url: 'http://x/', status: 'SUCCESS', location: `/v1/dumps/1/images/${i + 1}`, contentType: 'image/png', bytes: 4096 }) as unknown as ImageResult)
    const one = async (): Promise<void> => {
      const { requestId } = await quota.admit(userid, 1e9, { dataformat: 'json', data: Buffer.alloc(2000, 32) })
      await images.record(requestId!, 0, results)
      await requests.complete(requestId!, 0, Buffer.alloc(4000, 32), { status: 'SUCCESS', succeeded: 20, failed: 0 })
      await lookups.find(userid, requestId!)
    }
    for (let i = 0; i < 20; i++) await one()
    const started = performance.now()
    for (let i = 0; i < dumps; i++) await one()
    return (performance.now() - started) / dumps
  } finally {
    await db.destroy()
    await database.drop()
  }
}

async function main (): Promise<void> {
  const engines: Engine[] = process.env.MYSQL_URL === undefined ? ['sqlite'] : ['sqlite', 'mysql']
  for (const engine of engines) {
    const empty = await perDump(engine, 0)
    const full = await perDump(engine, rows)
    const again = await perDump(engine, 0)
    console.log(`${engine}: ${empty.toFixed(3)} ms per dump with no history (${again.toFixed(3)} again after), ${full.toFixed(3)} ms with ${rows.toLocaleString('en-US')} rows: ${(full / ((empty + again) / 2)).toFixed(2)} ×`)
  }
}

main().catch((error: unknown) => { console.error(error); process.exit(1) })
