/**
 * P8 history growth: the time of a dump (20 images of ~20 KB) when the user already has
 * 0, 100,000 and 1,000,000 dumps in their history, as a ratio to the empty history in the
 * same run; on SQLite and, with MYSQL_URL set, on MariaDB/MySQL.
 *
 * The history is alice's own, seeded in one statement (test/helpers/history.ts) as the
 * quota would have written it, all of it inside the quota's hour: the worst case for the
 * admission, which used to read every row of that hour (the bench's plan has a limit no
 * history reaches). Each size has its own database, seeded once; each run starts a service
 * on it, warms it with one dump and times the next ones; sizes alternate between runs.
 */
import { mkdir, rm } from 'node:fs/promises'
import path from 'node:path'
import { connect } from '../../db/connect.js'
import type { Engine } from '../../db/schema.js'
import { createTestDatabase, type TestDatabase } from '../../test/helpers/db.js'
import { seedHistory } from '../../test/helpers/history.js'
import { alternate, assertAllSucceeded, range, type Context, type Section } from '../lib/context.js'
import { jsonBatch, startService } from '../lib/service.js'
import { fmt, num, summarize } from '../lib/stats.js'

const IMAGES = 20
const GOAL = 1.1

interface Prepared { rows: number, workDir: string, databaseUrl: string, database?: TestDatabase }

export async function history (ctx: Context): Promise<Section> {
  const sizes = ctx.smoke ? [0, 1000] : [0, 100_000, 1_000_000]
  const dumpsPerRun = ctx.smoke ? 3 : 15
  const engines: Engine[] = !ctx.smoke && process.env.MYSQL_URL !== undefined && process.env.MYSQL_URL !== '' ? ['sqlite', 'mysql'] : ['sqlite']
  const root = ctx.storage.at(-1)!
  const body = jsonBatch(range(IMAGES).map((k) => ctx.origins.small(k % ctx.origins.smallCount)), 4)
  const headlines: Section['headlines'] = []
  const tables: string[] = []

  for (const engine of engines) {
    const prepared: Prepared[] = []
    try {
      for (const rows of sizes) {
        const workDir = path.join(root.dir, `p8-${engine}-${rows}`)
        await mkdir(workDir, { recursive: true })
        const database = engine === 'mysql' ? await createTestDatabase('mysql') : undefined
        const databaseUrl = database?.url ?? `sqlite:${path.join(workDir, 'image-dump.db')}`
        prepared.push({ rows, workDir, databaseUrl, ...(database === undefined ? {} : { database }) })
        // a first start migrates and imports users.txt; the history is then written beside it
        const service = await startService({ workDir, env: { ...ctx.env, DATABASE_URL: databaseUrl } })
        await service.stop()
        const started = performance.now()
        const { db } = connect(databaseUrl)
        try {
          const alice = await db.selectFrom('users').select('userid').where('username', '=', 'alice').executeTakeFirstOrThrow()
          for (let done = 0; done < rows; done += 1_000_000) {
            await seedHistory(db, engine, alice.userid, Math.min(1_000_000, rows - done), { spanSeconds: 1800, endSecondsAgo: 60 })
          }
        } finally {
          await db.destroy()
        }
        ctx.progress(`P8 ${engine}: ${rows.toLocaleString('en-US')} rows of history seeded in ${num((performance.now() - started) / 1000, 1)} s`)
      }

      const perDump = sizes.map(() => [] as number[])
      const ratios = sizes.map(() => [] as number[])
      for (let run = 0; run < ctx.runs; run++) {
        const medians = new Map<number, number>()
        for (const size of alternate(run, prepared)) {
          const service = await startService({ workDir: size.workDir, env: { ...ctx.env, DATABASE_URL: size.databaseUrl } })
          try {
            assertAllSucceeded('P8 warm-up', await service.dump(body), IMAGES)
            const times: number[] = []
            for (let i = 0; i < dumpsPerRun; i++) {
              const outcome = await service.dump(body)
              assertAllSucceeded(`P8 ${size.rows}`, outcome, IMAGES)
              times.push(outcome.ms)
            }
            medians.set(size.rows, summarize(times).median)
          } finally {
            await service.stop()
          }
        }
        sizes.forEach((rows, i) => {
          perDump[i]!.push(medians.get(rows)!)
          ratios[i]!.push(medians.get(rows)! / medians.get(0)!)
        })
        ctx.progress(`P8 ${engine} run ${run + 1}/${ctx.runs}: ${sizes.map((rows) => `${rows.toLocaleString('en-US')} → ${num(medians.get(rows)!, 1)} ms`).join(', ')}`)
      }

      const last = sizes.length - 1
      const ratio = summarize(ratios[last]!)
      const largest = sizes[last]!.toLocaleString('en-US')
      headlines.push({
        figure: `P8 time per dump, ${largest} rows of history ÷ none, ${engine === 'mysql' ? 'MariaDB' : 'SQLite'}`,
        service: `${fmt(summarize(perDump[last]!), 1)} ms`,
        baseline: `${fmt(summarize(perDump[0]!), 1)} ms`,
        ratio: fmt(ratio, 2),
        goal: `≤ ${GOAL}`,
        verdict: ctx.smoke ? 'not judged (smoke)' : ratio.median <= GOAL ? 'met' : 'not met'
      })
      tables.push(
        `${engine === 'mysql' ? 'MariaDB/MySQL' : 'SQLite'}:`,
        '',
        '| history (rows) | ms per dump | ÷ no history |',
        '|---:|---:|---:|',
        ...sizes.map((rows, i) => `| ${rows.toLocaleString('en-US')} | ${fmt(summarize(perDump[i]!), 1)} | ${fmt(summarize(ratios[i]!), 2)} |`),
        ''
      )
    } finally {
      for (const size of prepared) {
        await size.database?.drop()
        await rm(size.workDir, { recursive: true, force: true })
      }
    }
  }

  return {
    id: 'P8',
    title: `P8 history growth: a ${IMAGES}-image dump after ${sizes.map((n) => n.toLocaleString('en-US')).join(', ')} earlier dumps`,
    headlines,
    body: [
      `- Origin: ${ctx.origins.description}; storage on ${root.description}.`,
      `- alice's history, all inside the quota's hour, seeded before the service starts; per run and size a fresh process, one warm-up dump, then the median of ${dumpsPerRun} dumps; the ratio is taken within each run.${engines.includes('mysql') ? '' : ' MariaDB: set MYSQL_URL (not in --smoke).'}`,
      '',
      ...tables
    ]
  }
}
