/**
 * P6 duplicates: a feed of 4000 images of ~20 KB (1000 items × 4 URLs) where every one of
 * 2000 URLs appears twice (the second time 2000 images later), timed against the previous
 * build (`--previous DIR`, a built copy of the project before this change) on the same
 * feed, alternately, each from a fresh process, database and STORAGE_DIR, warmed by one
 * dump of the same shape and images under other URLs first. The time is measured against the static origin (nginx when there
 * is one, as P1); the origin's hit count, which nginx does not keep here (access_log off),
 * on a second dump of the same shape from the Node test origin, which counts requests.
 */
import { alternate, assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { jsonBatch } from '../lib/service.js'
import { fmt, num, summarize } from '../lib/stats.js'

interface Measure { ms: number, cpuMs: number, hits: number }

export async function duplicates (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 80 : 4000
  const distinct = count / 2
  const { smallBytes } = ctx.origins
  const feed = (url: (n: number) => string): string => jsonBatch(range(count).map((i) => url(i % distinct)), 4)
  const timed = feed((n) => ctx.origins.small(n % ctx.origins.smallCount, n < ctx.origins.smallCount ? undefined : n))
  // the same images under other URLs: the timed URLs again would be revalidated (P5), not downloaded
  const warmUp = feed((n) => ctx.origins.small(n % ctx.origins.smallCount, 1_000_000 + n))
  const counted = feed((n) => ctx.origins.node.url(`/png/${n}?bytes=${smallBytes}`))
  // the service's own cost, not the disk's: on a tmpfs when there is one (see P1 for the difference)
  const root = ctx.storage.at(-1)!
  const builds = ctx.previousServerJs === undefined ? ['this'] as const : ['this', 'previous'] as const
  const results: Record<string, Measure[]> = { this: [], previous: [] }

  for (let run = 0; run < ctx.runs; run++) {
    for (const build of alternate(run, builds)) {
      await withService(ctx, {}, async (service) => {
        assertAllSucceeded('P6 warm-up', await service.dump(warmUp), count)
        const cpu = service.cpuMs()
        const outcome = await service.dump(timed)
        const cpuMs = service.cpuMs() - cpu
        assertAllSucceeded('P6', outcome, count)
        ctx.origins.node.resetCounters()
        assertAllSucceeded('P6 hit count', await service.dump(counted), count)
        results[build]!.push({ ms: outcome.ms, cpuMs, hits: ctx.origins.node.requests })
      }, { root: root.dir, ...(build === 'previous' ? { serverJs: ctx.previousServerJs! } : {}) })
    }
    const now = results.this!.at(-1)!
    const before = results.previous!.at(-1)
    ctx.progress(`P6 run ${run + 1}/${ctx.runs}: ${num(now.ms, 0)} ms, ${num(now.cpuMs, 0)} ms CPU, ${now.hits} hits${before === undefined ? '' : `; previous build ${num(before.ms, 0)} ms, ${num(before.cpuMs, 0)} ms CPU, ${before.hits} hits, ratio ${num(now.ms / before.ms)}`}`)
  }

  const ms = summarize(results.this!.map((m) => m.ms))
  const hits = summarize(results.this!.map((m) => m.hits))
  const paired = results.previous!.length === results.this!.length && results.previous!.length > 0
  const ratio = paired ? summarize(results.this!.map((m, i) => m.ms / results.previous![i]!.ms)) : undefined
  const cpuRatio = paired ? summarize(results.this!.map((m, i) => m.cpuMs / results.previous![i]!.cpuMs)) : undefined
  const headlines: Headline[] = [
    {
      figure: `P6 duplicates, ${count} images (${distinct} URLs twice), storage on ${root.description} (ms)`,
      service: fmt(ms, 0),
      baseline: paired ? `${fmt(summarize(results.previous!.map((m) => m.ms)), 0)} previous build` : 'no previous build (--previous DIR)',
      ratio: ratio === undefined ? '–' : fmt(ratio, 2),
      goal: 'ratio ≤ 0.6',
      verdict: ratio === undefined ? 'no baseline' : ratio.median <= 0.6 ? 'met' : 'not met'
    },
    {
      figure: 'P6 duplicates: service CPU per dump (ms)',
      service: fmt(summarize(results.this!.map((m) => m.cpuMs)), 0),
      baseline: paired ? `${fmt(summarize(results.previous!.map((m) => m.cpuMs)), 0)} previous build` : '–',
      ratio: cpuRatio === undefined ? '–' : fmt(cpuRatio, 2),
      goal: 'less than the time',
      verdict: '–'
    },
    {
      figure: `P6 origin hits for ${count} images (${distinct} URLs twice)`,
      service: fmt(hits, 0),
      baseline: paired ? `${fmt(summarize(results.previous!.map((m) => m.hits)), 0)} previous build` : '–',
      ratio: '–',
      goal: `= ${distinct}`,
      verdict: hits.max === distinct && hits.min === distinct ? 'met' : 'not met'
    }
  ]
  return {
    id: 'P6',
    title: `P6 duplicates: ${count} images, ${distinct} URLs each twice`,
    headlines,
    body: [
      `- Feed: ${count / 4} items × 4 URLs; image i is URL i mod ${distinct}, so every URL comes back ${distinct} images later. Timed from the ${ctx.origins.kind === 'nginx' ? 'nginx' : 'Node'} origin (${ctx.origins.description}); hits counted on a second dump of the same shape from the Node test origin.`,
      `- Each build from a fresh process, database and STORAGE_DIR on ${root.description}, warmed by one dump of the same shape and images under other URLs; the builds alternate within each run (which goes first alternates too).`,
      '',
      '- CPU: the service process\'s user + system time over the timed dump (/proc/<pid>/stat, every thread), which moves much less than wall time on a shared machine.',
      '',
      '| run | this build ms | CPU ms | hits | previous build ms | CPU ms | hits | time ratio | CPU ratio |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...results.this!.map((m, i) => {
        const p = results.previous![i]
        return p === undefined
          ? `| ${i + 1} | ${num(m.ms, 0)} | ${num(m.cpuMs, 0)} | ${m.hits} | – | – | – | – | – |`
          : `| ${i + 1} | ${num(m.ms, 0)} | ${num(m.cpuMs, 0)} | ${m.hits} | ${num(p.ms, 0)} | ${num(p.cpuMs, 0)} | ${p.hits} | ${num(m.ms / p.ms, 2)} | ${num(m.cpuMs / p.cpuMs, 2)} |`
      })
    ]
  }
}
