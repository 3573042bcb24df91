/**
 * P5 re-dump: the P1 feed (2000 distinct ~20 KB PNGs, 500 items × 4 URLs) dumped once,
 * then the same feed again, unchanged, from an origin that answers validators (nginx sends
 * ETag and Last-Modified for static files and answers 304 to them; without nginx, the Node
 * test origin's `/png/<n>?etag=1`). Per run, from a fresh process, database and
 * STORAGE_DIR, warmed by a dump of the same images under other URLs: the time of the
 * second dump ÷ the first, the images it reused, the image bytes it downloaded and the
 * disk space it took (distinct inodes' blocks: a reused image points at the object already
 * stored, so it should take none). The origin's own count of 200s and 304s comes from the same pair
 * of dumps against the Node test origin, which counts requests (nginx keeps no log here).
 */
import { lstat, readdir } from 'node:fs/promises'
import path from 'node:path'
import { assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { jsonBatch } from '../lib/service.js'
import type { StorageRoot } from '../lib/storage.js'
import { fmt, num, summarize } from '../lib/stats.js'

interface Row {
  firstMs: number
  secondMs: number
  /** CPU time of the service process over each dump, ms */
  firstCpu: number
  secondCpu: number
  /** images the second dump reused */
  reused: number
  /** image bytes the second dump downloaded */
  downloadedBytes: number
  /** disk space the second dump took, bytes */
  diskBytes: number
}

/** Disk space under `dir`: the blocks of each distinct inode (files and folders), once. */
async function diskUsage (dir: string): Promise<number> {
  const seen = new Set<bigint>()
  let bytes = 0
  const entries = await readdir(dir, { recursive: true })
  for (const entry of ['.', ...entries]) {
    const stat = await lstat(path.join(dir, entry), { bigint: true }).catch(() => undefined)
    if (stat === undefined || seen.has(stat.ino)) continue
    seen.add(stat.ino)
    bytes += Number(stat.blocks) * 512
  }
  return bytes
}

async function measure (ctx: Context, root: StorageRoot, body: string, warmUp: string, count: number): Promise<Row[]> {
  const rows: Row[] = []
  for (let run = 0; run < ctx.runs; run++) {
    await withService(ctx, {}, async (service) => {
      assertAllSucceeded('P5 warm-up', await service.dump(warmUp), count)
      const cpu0 = service.cpuMs()
      const first = await service.dump(body)
      const firstCpu = service.cpuMs() - cpu0
      assertAllSucceeded('P5 first dump', first, count)
      if (first.reused !== 0) throw new Error(`P5: the first dump reused ${first.reused} images`)
      const before = await diskUsage(service.storageDir)
      const cpu1 = service.cpuMs()
      const second = await service.dump(body)
      const secondCpu = service.cpuMs() - cpu1
      assertAllSucceeded('P5 second dump', second, count)
      const diskBytes = await diskUsage(service.storageDir) - before
      rows.push({ firstMs: first.ms, secondMs: second.ms, firstCpu, secondCpu, reused: second.reused, downloadedBytes: second.downloadedBytes, diskBytes })
    }, { root: root.dir })
    const row = rows.at(-1)!
    ctx.progress(`P5 (${root.label}) run ${run + 1}/${ctx.runs}: first ${num(row.firstMs, 0)} ms, second ${num(row.secondMs, 0)} ms, ratio ${num(row.secondMs / row.firstMs, 3)} (CPU ${num(row.secondCpu / row.firstCpu, 3)}), ${row.reused} reused, ${row.downloadedBytes} bytes downloaded`)
  }
  return rows
}

/** The origin's view on the Node test origin: requests by status over a first and a second dump. */
async function originCounts (ctx: Context, count: number): Promise<{ first: number, second200: number, second304: number }> {
  const { node, smallBytes } = ctx.origins
  const body = jsonBatch(range(count).map((n) => node.url(`/png/${n}?bytes=${smallBytes}&etag=1`)), 4)
  return await withService(ctx, {}, async (service) => {
    node.resetCounters()
    assertAllSucceeded('P5 counted, first dump', await service.dump(body), count)
    const first = node.requests
    node.resetCounters()
    assertAllSucceeded('P5 counted, second dump', await service.dump(body), count)
    // the route answers 304 exactly to an If-None-Match that names its ETag, which the service sends back as it came
    const conditional = node.requestHeaders.filter((headers) => headers['if-none-match'] !== undefined).length
    return { first, second200: node.requests - conditional, second304: conditional }
  }, { root: ctx.storage.at(-1)!.dir })
}

export async function redump (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 40 : 2000
  const { smallCount, smallBytes } = ctx.origins
  const validating = ctx.origins.kind === 'nginx'
  const url = (n: number, copy?: number): string => validating
    ? ctx.origins.small(n % smallCount, copy ?? (n < smallCount ? undefined : n))
    : ctx.origins.node.url(`/png/${n}?bytes=${smallBytes}&etag=1${copy === undefined ? '' : `&copy=${copy}`}`)
  const body = jsonBatch(range(count).map((n) => url(n)), 4)
  const warmUp = jsonBatch(range(count).map((n) => url(n, count + n)), 4)
  const headlines: Headline[] = []
  const tables: string[] = []

  for (const root of ctx.storage) {
    const rows = await measure(ctx, root, body, warmUp, count)
    const ratio = summarize(rows.map((r) => r.secondMs / r.firstMs))
    const stored = summarize(rows.map((r) => r.downloadedBytes))
    headlines.push({
      figure: `P5 re-dump, ${count} unchanged images, storage on ${root.description}: second dump ÷ first (time)`,
      service: `${fmt(summarize(rows.map((r) => r.secondMs)), 0)} ms`,
      baseline: `${fmt(summarize(rows.map((r) => r.firstMs)), 0)} ms first dump`,
      ratio: fmt(ratio, 3),
      goal: 'ratio ≤ 0.1',
      verdict: ratio.median <= 0.1 ? 'met' : `not met (${num(ratio.median / 0.1, 1)}× the goal)`
    }, {
      figure: `P5 re-dump, storage on ${root.description}: service CPU, second dump ÷ first`,
      service: `${fmt(summarize(rows.map((r) => r.secondCpu)), 0)} ms`,
      baseline: `${fmt(summarize(rows.map((r) => r.firstCpu)), 0)} ms first dump`,
      ratio: fmt(summarize(rows.map((r) => r.secondCpu / r.firstCpu)), 3),
      goal: '–',
      verdict: '–'
    }, {
      figure: `P5 re-dump, storage on ${root.description}: image bytes stored by the second dump`,
      service: fmt(stored, 0),
      baseline: `${fmt(summarize(rows.map((r) => r.reused)), 0)} of ${count} reused`,
      ratio: '–',
      goal: '0',
      verdict: stored.max === 0 ? 'met' : 'not met'
    })
    tables.push(
      '',
      `Storage on ${root.description}:`,
      '',
      '| run | first dump ms | second dump ms | ratio | CPU ms first | CPU ms second | CPU ratio | reused | image bytes downloaded | disk space taken |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map((r, i) => `| ${i + 1} | ${num(r.firstMs, 0)} | ${num(r.secondMs, 0)} | ${num(r.secondMs / r.firstMs, 3)} | ${num(r.firstCpu, 0)} | ${num(r.secondCpu, 0)} | ${num(r.secondCpu / r.firstCpu, 3)} | ${r.reused} | ${r.downloadedBytes} | ${num(r.diskBytes / 1024, 0)} KiB |`)
    )
  }

  const counts = await originCounts(ctx, count)
  headlines.push({
    figure: `P5 origin answers to the second dump of ${count} images (Node test origin)`,
    service: `${counts.second304} × 304, ${counts.second200} × 200`,
    baseline: `${counts.first} × 200 for the first dump`,
    ratio: '–',
    goal: `${count} × 304`,
    verdict: counts.second304 === count && counts.second200 === 0 ? 'met' : 'not met'
  })

  return {
    id: 'P5',
    title: `P5 re-dump: ${count} unchanged images dumped a second time`,
    headlines,
    body: [
      `- Origin: ${validating ? `${ctx.origins.description}; it sends ETag and Last-Modified and answers 304 to If-None-Match` : `the Node test origin's \`/png/<n>?etag=1\` (ETag, 304 to If-None-Match), since nginx is not here${ctx.origins.fallbackReason === undefined ? '' : ` (${ctx.origins.fallbackReason})`}`}.`,
      `- Per run, a fresh process, database and STORAGE_DIR: a warm-up dump of the same images under other URLs, then the feed (${Math.ceil(count / 4)} items × 4 URLs) twice, each timed from the request being sent to the last byte of the answer. The ratio is second ÷ first, per run.`,
      '- CPU: the service process\'s user + system time over each dump (/proc/<pid>/stat, every thread), which moves much less than wall time on a shared machine.',
      '- Image bytes downloaded: the bytes of the second dump\'s images the answer does not mark reused. Disk space taken: the blocks of every distinct inode under STORAGE_DIR after the second dump minus before (a reused image points at the object already stored, by key: nothing is written for it).',
      '- The origin\'s answers are counted on the Node test origin over a first and a second dump of the same shape (nginx keeps no access log here).',
      ...tables
    ]
  }
}
