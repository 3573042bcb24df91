/**
 * P1 throughput: 2000 distinct ~20 KB PNGs from nginx, as one authenticated dump of
 * 500 items × 4 URLs against `curl --parallel --parallel-max 64` over the same URLs,
 * alternately, each into an empty folder. The service is warm (one dump of the same images
 * first, under other URLs, per worker: connections go to the workers in turn, so the
 * measured dump may land on any; the same URLs again would be revalidated, not downloaded,
 * see P5) and runs from a fresh process, database and STORAGE_DIR per run. Measured once per
 * storage root: the temporary folder's disk, and a tmpfs when there is one.
 */
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { alternate, assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { curlArgs, curlParallel } from '../lib/curl.js'
import { defaults } from '../../config.js'
import { jsonBatch, type Service } from '../lib/service.js'
import type { StorageRoot } from '../lib/storage.js'
import { fmt, num, summarize } from '../lib/stats.js'

/** How many processes serve: WORKERS as the service was started with, else its default. */
function workersOf (service: Service): number {
  return Number(service.env.WORKERS ?? defaults.workers)
}

interface Row {
  /** images/s */
  service: number
  curl?: number
  /** CPU ms per image (every thread of the service process; curl's user + system) */
  serviceCpu: number
  curlCpu?: number
}

async function measure (ctx: Context, root: StorageRoot, urls: string[], body: string, warmUp: string): Promise<Row[]> {
  const count = urls.length
  const rows: Row[] = []
  for (let run = 0; run < ctx.runs; run++) {
    const row: Row = { service: 0, serviceCpu: 0 }
    for (const side of alternate(run, ['service', 'curl'] as const)) {
      if (side === 'service') {
        await withService(ctx, {}, async (service) => {
          // one after another, so that each worker (taking connections in turn) warms up once
          for (let w = 0; w < workersOf(service); w++) assertAllSucceeded('P1 warm-up', await service.dump(warmUp), count)
          const cpu = service.cpuMs()
          const outcome = await service.dump(body)
          row.serviceCpu = (service.cpuMs() - cpu) / count
          assertAllSucceeded('P1', outcome, count)
          row.service = count / (outcome.ms / 1000)
        }, { root: root.dir })
      } else if (ctx.curl !== null) {
        const outDir = path.join(root.dir, `p1-curl-${run}`)
        const outcome = await curlParallel(ctx.curl, urls, outDir)
        await rm(outDir, { recursive: true, force: true })
        await rm(`${outDir}.curlrc`, { force: true })
        if (outcome.bytes < count * ctx.origins.smallBytes * 0.99) throw new Error(`curl wrote ${outcome.bytes} bytes`)
        row.curl = count / (outcome.ms / 1000)
        row.curlCpu = outcome.cpuMs / count
      }
    }
    rows.push(row)
    ctx.progress(`P1 (${root.label}) run ${run + 1}/${ctx.runs}: service ${num(row.service, 0)} images/s${row.curl === undefined ? '' : `, curl ${num(row.curl, 0)} images/s, ratio ${num(row.service / row.curl)}`}`)
  }
  return rows
}

export async function throughput (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 40 : 2000
  const urls = range(count).map((n) => ctx.origins.small(n % ctx.origins.smallCount, n < ctx.origins.smallCount ? undefined : n))
  const body = jsonBatch(urls, 4)
  const warmUp = jsonBatch(range(count).map((n) => ctx.origins.small(n % ctx.origins.smallCount, count + n)), 4)
  const kib = num(ctx.origins.smallBytes / 1024, 0)
  const headlines: Headline[] = []
  const tables: string[] = []

  for (const root of ctx.storage) {
    const rows = await measure(ctx, root, urls, body, warmUp)
    const service = summarize(rows.map((r) => r.service))
    const paired = rows.filter((r): r is Row & { curl: number } => r.curl !== undefined)
    const curl = paired.length === 0 ? undefined : summarize(paired.map((r) => r.curl))
    const ratio = paired.length === 0 ? undefined : summarize(paired.map((r) => r.service / r.curl))
    headlines.push({
      figure: `P1 throughput, ${count} × ${kib} KiB, storage on ${root.description} (images/s)`,
      service: fmt(service, 0),
      baseline: curl === undefined ? (ctx.curlSkipReason ?? 'skipped') : `${fmt(curl, 0)} curl`,
      ratio: ratio === undefined ? '–' : fmt(ratio, 2),
      goal: 'ratio ≥ 1.0',
      verdict: ratio === undefined ? 'no baseline' : ratio.median >= 1 ? 'met' : `not met (${num((1 - ratio.median) * 100, 0)} % short)`
    })
    tables.push(
      '',
      `Storage on ${root.description}:`,
      '',
      '| run | service images/s | curl images/s | ratio | service CPU ms/image | curl CPU ms/image |',
      '|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r, i) => `| ${i + 1} | ${num(r.service, 0)} | ${r.curl === undefined ? '–' : num(r.curl, 0)} | ${r.curl === undefined ? '–' : num(r.service / r.curl, 2)} | ${num(r.serviceCpu, 3)} | ${r.curlCpu === undefined || Number.isNaN(r.curlCpu) ? '–' : num(r.curlCpu, 3)} |`),
      '',
      `CPU per image, median (min–max): service ${fmt(summarize(rows.map((r) => r.serviceCpu)), 3)} ms${paired.length === 0 ? '' : `, curl ${fmt(summarize(paired.map((r) => r.curlCpu ?? Number.NaN)), 3)} ms`}.`
    )
  }

  return {
    id: 'P1',
    title: `P1 throughput: ${count} images of ${kib} KiB`,
    headlines,
    body: [
      `- Origin: ${ctx.origins.description}.${ctx.origins.fallbackReason === undefined ? '' : ` **${ctx.origins.fallbackReason}.**`}`,
      `- Service: one \`POST /v1/dumps\` (JSON, ${Math.ceil(count / 4)} items × 4 URLs, ${num(body.length / 1024, 0)} KiB), timed from the request being sent to the last byte of the answer; a warm-up dump of the same images under other URLs first, one per worker (the same URLs would be revalidated, P5); a fresh process tree, database and STORAGE_DIR per run.`,
      ctx.curl === null
        ? `- Baseline skipped: ${ctx.curlSkipReason ?? 'curl not found'}.`
        : `- Baseline: \`curl ${curlArgs('urls.curlrc', 'empty-folder').join(' ')}\` (URLs as \`url = "…"\` lines in the config file), timed from process start to exit.`,
      '- Both sides alternate within each run (which goes first alternates too); the ratio is service ÷ curl, per run.',
      '- CPU per image: the service process\'s user + system time over the measured dump (/proc/<pid>/stat, every thread: the main thread and the libuv pool), curl\'s from the shell\'s `times`. Less sensitive than wall time to whatever else the machine is doing.',
      ...tables
    ]
  }
}
