/**
 * P8 history growth: the time of a dump (20 images of ~20 KB) when the user already has
 * 0, 100,000 and 1,000,000 dumps in their history, as a ratio to the empty history in the
 * same run; on SQLite and, with MYSQL_URL set, on MariaDB/MySQL.
 *
 * The history is alice's own, seeded in one statement (test/helpers/history.ts) as the
 * quota would have written it, all of it inside the quota's hour: the worst case for the
 * admission, which used to read every row of that hour (the bench's plan has a limit no
 * history reaches). Each size has its own database, seeded once; each run starts a service
 * on each, warms them with one dump, then times dumps taking turns between the sizes (a
 * busy machine weighs on all alike); the service's CPU time per dump is reported beside.
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
  const dumpsPerRun = ctx.smoke ? 3 : 30
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

      // The sizes' services run side by side and take turns, dump by dump, so that whatever
      // else the machine does at a moment weighs on every size alike.
      const perDump = sizes.map(() => [] as number[])
      const ratios = sizes.map(() => [] as number[])
      const cpuPerDump = sizes.map(() => [] as number[])
      const cpuRatios = sizes.map(() => [] as number[])
      for (let run = 0; run < ctx.runs; run++) {
        const services = await Promise.all(prepared.map((size) => startService({ workDir: size.workDir, env: { ...ctx.env, DATABASE_URL: size.databaseUrl } })))
        try {
          const times = sizes.map(() => [] as number[])
          for (const service of services) assertAllSucceeded('P8 warm-up', await service.dump(body), IMAGES)
          const cpuBefore = services.map((service) => service.cpuMs())
          for (let i = 0; i < dumpsPerRun; i++) {
            for (const k of alternate(run + i, range(sizes.length))) {
              const outcome = await services[k]!.dump(body)
              assertAllSucceeded(`P8 ${sizes[k]}`, outcome, IMAGES)
              times[k]!.push(outcome.ms)
            }
          }
          const cpu = services.map((service, k) => (service.cpuMs() - cpuBefore[k]!) / dumpsPerRun)
          const medians = times.map((t) => summarize(t).median)
          sizes.forEach((_, k) => {
            perDump[k]!.push(medians[k]!)
            ratios[k]!.push(medians[k]! / medians[0]!)
            cpuPerDump[k]!.push(cpu[k]!)
            cpuRatios[k]!.push(cpu[k]! / cpu[0]!)
          })
          ctx.progress(`P8 ${engine} run ${run + 1}/${ctx.runs}: ${sizes.map((rows, k) => `${rows.toLocaleString('en-US')} → ${num(medians[k]!, 1)} ms (CPU ${num(cpu[k]!, 1)} ms)`).join(', ')}`)
        } finally {
          await Promise.all(services.map((service) => service.stop()))
        }
      }

      const last = sizes.length - 1
      const ratio = summarize(ratios[last]!)
      const largest = sizes[last]!.toLocaleString('en-US')
      const cpuRatio = summarize(cpuRatios[last]!)
      headlines.push({
        figure: `P8 time per dump, ${largest} rows of history ÷ none, ${engine === 'mysql' ? 'MariaDB' : 'SQLite'}`,
        service: `${fmt(summarize(perDump[last]!), 1)} ms`,
        baseline: `${fmt(summarize(perDump[0]!), 1)} ms`,
        ratio: fmt(ratio, 2),
        goal: `≤ ${GOAL}`,
        verdict: ctx.smoke ? 'not judged (smoke)' : `${ratio.median <= GOAL ? 'met' : 'not met'} (service CPU per dump ${fmt(cpuRatio, 2)})`
      })
      tables.push(
        `${engine === 'mysql' ? 'MariaDB/MySQL' : 'SQLite'}:`,
        '',
        '| history (rows) | ms per dump | ÷ no history | service CPU ms per dump | ÷ no history |',
        '|---:|---:|---:|---:|---:|',
        ...sizes.map((rows, i) => `| ${rows.toLocaleString('en-US')} | ${fmt(summarize(perDump[i]!), 1)} | ${fmt(summarize(ratios[i]!), 2)} | ${fmt(summarize(cpuPerDump[i]!), 1)} | ${fmt(summarize(cpuRatios[i]!), 2)} |`),
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
      `- alice's history, all inside the quota's hour, seeded before the service starts; per run a fresh process per size, all running side by side, one warm-up dump each, then ${dumpsPerRun} dumps per size taking turns; a run's figure is its median, the ratio is taken within each run; CPU is the service process's user + system time over those dumps.${engines.includes('mysql') ? '' : ' MariaDB: set MYSQL_URL (not in --smoke).'}`,
      '',
      ...tables
    ]
  }
}
