/**
 * How many quota admissions per second one MariaDB/MySQL database takes when several
 * service instances compete for it.
 *
 *   MYSQL_URL=mysql://root@127.0.0.1:3306/test node --import tsx bench/quota-admissions.ts [--instances 3] [--seconds 5]
 *
 * Each instance is a process of its own with its own connection pool, calling the quota
 * service's `admit` (the one transaction that locks the user row, counts the window and
 * logs the request) in a loop with 16 concurrent callers. Two cases: every instance
 * admitting for the same user (all transactions serialise on one row lock: the worst
 * case, a single client hammering its quota) and each caller for a user of its own.
 */
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { connect } from '../db/connect.js'
import { migrateToLatest } from '../db/migrate.js'
import { createQuotaService } from '../plugins/quota.js'
import { createTestDatabase } from '../test/helpers/db.js'

const CALLERS = 16

interface WorkerTask { url: string, userids: number[], seconds: number }
interface WorkerResult { admitted: number, errors: number, seconds: number }

async function worker (task: WorkerTask): Promise<WorkerResult> {
  const { db, engine } = connect(task.url, { poolSize: CALLERS })
  const quota = createQuotaService(db, engine, { plans: { load: 1e9 } })
  const deadline = performance.now() + task.seconds * 1000
  let admitted = 0
  let errors = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: CALLERS }, async (_, i) => {
    const userid = task.userids[i % task.userids.length]!
    while (performance.now() < deadline) {
      try {
        if ((await quota.admit(userid, 1e9, { dataformat: 'json', data: null })).admitted) admitted++
      } catch {
        errors++
      }
    }
  }))
  const seconds = (performance.now() - started) / 1000
  await db.destroy()
  return { admitted, errors, seconds }
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { instances: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } } })
  const instances = Number(values.instances)
  const seconds = Number(values.seconds)
  if (process.env.MYSQL_URL === undefined) throw new Error('set MYSQL_URL, e.g. mysql://root@127.0.0.1:3306/test')
  const database = await createTestDatabase('mysql')
  try {
    const { db } = connect(database.url)
    await migrateToLatest(db)
    const users = Array.from({ length: instances * CALLERS }, (_, i) => ({ username: `load${i}`, plan: 'load' }))
    await db.insertInto('users').values(users).execute()
    const ids = (await db.selectFrom('users').select('userid').orderBy('userid').execute()).map((r) => r.userid)
    await db.destroy()

    for (const [name, userids] of [
      ['one user, every instance', (_: number) => [ids[0]!]],
      ['a user per caller', (i: number) => ids.slice(i * CALLERS, (i + 1) * CALLERS)]
    ] as const) {
      const results = await Promise.all(Array.from({ length: instances }, (_, i) => new Promise<WorkerResult>((resolve, reject) => {
        const child = fork(fileURLToPath(import.meta.url), ['--worker'], { execArgv: ['--import', 'tsx'] })
        child.once('message', (result) => { resolve(result as WorkerResult); child.kill() })
        child.once('error', reject)
        child.send({ url: database.url, userids: userids(i), seconds } satisfies WorkerTask)
      })))
      const admitted = results.reduce((sum, r) => sum + r.admitted, 0)
      const errors = results.reduce((sum, r) => sum + r.errors, 0)
      const elapsed = Math.max(...results.map((r) => r.seconds))
      console.log(`${name}: ${instances} instances x ${CALLERS} callers: ${(admitted / elapsed).toFixed(0)} admissions/s (${admitted} in ${elapsed.toFixed(1)} s, ${errors} errors)`)
    }
  } finally {
    await database.drop()
  }
}

if (process.argv.includes('--worker')) {
  process.once('message', (task) => {
    worker(task as WorkerTask).then((result) => process.send!(result), (error: unknown) => { console.error(error); process.exit(1) })
  })
} else {
  main().catch((error: unknown) => { console.error(error); process.exit(1) })
}
