/**
 * P1W, P1 over workers: the 2000 images of P1 as 8 concurrent dumps of 250 (one dump runs
 * in one worker, so only several dumps can use several), sent on connections of their own,
 * which node:cluster hands to the workers in turn. Measured with WORKERS=1 and WORKERS=2
 * against the same `curl --parallel` in the same run, the three alternating (which goes
 * first rotates), each service fresh (process, database, STORAGE_DIR) and warm (the same 8
 * dumps once first). CPU is the whole process tree's: the supervisor and its workers.
 */
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { alternate, assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { curlParallel } from '../lib/curl.js'
import { jsonBatch, type Service } from '../lib/service.js'
import type { StorageRoot } from '../lib/storage.js'
import { fmt, num, summarize } from '../lib/stats.js'

const DUMPS = 8
const WORKER_COUNTS = [1, 2] as const
type Side = 'curl' | `workers=${typeof WORKER_COUNTS[number]}`

interface Row {
  /** images/s by side */
  rate: Partial<Record<Side, number>>
  /** CPU ms per image by side (service: every process of the tree; curl: user + system) */
  cpu: Partial<Record<Side, number>>
}

/** The dumps at once, each on its own connection; wall time from the first sent to the last answered. */
async function dumpAll (service: Service, bodies: string[], perDump: number): Promise<number> {
  const started = performance.now()
  const outcomes = await Promise.all(bodies.map((body) => service.dump(body)))
  const ms = performance.now() - started
  outcomes.forEach((outcome, i) => assertAllSucceeded(`P1W dump ${i + 1}`, outcome, perDump))
  return ms
}

async function measure (ctx: Context, root: StorageRoot, urls: string[], bodies: string[], perDump: number): Promise<Row[]> {
  const count = urls.length
  const rows: Row[] = []
  const sides: Side[] = [...WORKER_COUNTS.map((w) => `workers=${w}` as const), ...(ctx.curl === null ? [] : ['curl' as const])]
  for (let run = 0; run < ctx.runs; run++) {
    const row: Row = { rate: {}, cpu: {} }
    for (const side of alternate(run, sides)) {
      if (side === 'curl') {
        const outDir = path.join(root.dir, `p1w-curl-${run}`)
        const outcome = await curlParallel(ctx.curl!, urls, outDir)
        await rm(outDir, { recursive: true, force: true })
        await rm(`${outDir}.curlrc`, { force: true })
        if (outcome.bytes < count * ctx.origins.smallBytes * 0.99) throw new Error(`curl wrote ${outcome.bytes} bytes`)
        row.rate.curl = count / (outcome.ms / 1000)
        row.cpu.curl = outcome.cpuMs / count
        continue
      }
      await withService(ctx, { WORKERS: side.slice('workers='.length) }, async (service) => {
        await dumpAll(service, bodies, perDump)
        const cpu = service.cpuMs()
        const ms = await dumpAll(service, bodies, perDump)
        row.cpu[side] = (service.cpuMs() - cpu) / count
        row.rate[side] = count / (ms / 1000)
      }, { root: root.dir })
    }
    rows.push(row)
    ctx.progress(`P1W (${root.label}) run ${run + 1}/${ctx.runs}: ${sides.map((side) => `${side} ${num(row.rate[side]!, 0)}`).join(', ')} images/s`)
  }
  return rows
}

export async function workers (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 40 : 2000
  const perDump = count / DUMPS
  const urls = range(count).map((n) => ctx.origins.small(n % ctx.origins.smallCount, n < ctx.origins.smallCount ? undefined : n))
  const bodies = range(DUMPS).map((d) => jsonBatch(urls.slice(d * perDump, (d + 1) * perDump), 4))
  const kib = num(ctx.origins.smallBytes / 1024, 0)
  const headlines: Headline[] = []
  const tables: string[] = []

  for (const root of ctx.storage) {
    const rows = await measure(ctx, root, urls, bodies, perDump)
    const paired = rows.filter((r) => r.rate.curl !== undefined)
    for (const w of WORKER_COUNTS) {
      const side = `workers=${w}` as const
      const ratio = paired.length === 0 ? undefined : summarize(paired.map((r) => r.rate[side]! / r.rate.curl!))
      headlines.push({
        figure: `P1W throughput, ${DUMPS} dumps × ${perDump} × ${kib} KiB, WORKERS=${w}, storage on ${root.description} (images/s)`,
        service: fmt(summarize(rows.map((r) => r.rate[side]!)), 0),
        baseline: paired.length === 0 ? (ctx.curlSkipReason ?? 'skipped') : `${fmt(summarize(paired.map((r) => r.rate.curl!)), 0)} curl`,
        ratio: ratio === undefined ? '–' : fmt(ratio, 2),
        goal: 'ratio ≥ 1.0',
        verdict: ratio === undefined ? 'no baseline' : ratio.median >= 1 ? 'met' : `not met (${num((1 - ratio.median) * 100, 0)} % short)`
      })
    }
    const scaling = summarize(rows.map((r) => r.rate['workers=2']! / r.rate['workers=1']!))
    tables.push(
      '',
      `Storage on ${root.description}:`,
      '',
      '| run | WORKERS=1 images/s | WORKERS=2 images/s | curl images/s | 2 ÷ 1 | 1 ÷ curl | 2 ÷ curl | CPU ms/image, 1 | CPU ms/image, 2 | curl CPU ms/image |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r, i) => {
        const one = r.rate['workers=1']!
        const two = r.rate['workers=2']!
        const curl = r.rate.curl
        return `| ${i + 1} | ${num(one, 0)} | ${num(two, 0)} | ${curl === undefined ? '–' : num(curl, 0)} | ${num(two / one, 2)} | ${curl === undefined ? '–' : num(one / curl, 2)} | ${curl === undefined ? '–' : num(two / curl, 2)} | ${num(r.cpu['workers=1']!, 3)} | ${num(r.cpu['workers=2']!, 3)} | ${r.cpu.curl === undefined || Number.isNaN(r.cpu.curl) ? '–' : num(r.cpu.curl, 3)} |`
      }),
      '',
      `WORKERS=2 ÷ WORKERS=1, median (min–max): ${fmt(scaling, 2)}. CPU per image, median (min–max): ${WORKER_COUNTS.map((w) => `WORKERS=${w} ${fmt(summarize(rows.map((r) => r.cpu[`workers=${w}`]!)), 3)} ms`).join(', ')}.`
    )
  }

  return {
    id: 'P1W',
    title: `P1W throughput over workers: ${count} images of ${kib} KiB in ${DUMPS} dumps`,
    headlines,
    body: [
      `- Origin: ${ctx.origins.description}.${ctx.origins.fallbackReason === undefined ? '' : ` **${ctx.origins.fallbackReason}.**`}`,
      `- Service: ${DUMPS} \`POST /v1/dumps\` at once (JSON, ${perDump} images each, a connection each), timed from the first sent to the last answered; a warm-up round of the same dumps first; a fresh process tree, database and STORAGE_DIR per run. WORKERS=1 is one process; WORKERS=2 a supervisor and two workers (each with its own ${'`'}DOWNLOAD_CONCURRENCY${'`'} slots).`,
      `- Baseline: the same curl as P1, over the same ${count} URLs.`,
      '- The three alternate within each run (which goes first rotates); ratios are per run.',
      '- CPU per image: user + system time of every process of the service (supervisor and workers, every thread) over the measured round.',
      ...tables
    ]
  }
}
