/**
 * P4 cost growth: 10, 100, 1000 and 10,000 images of ~20 KB per dump (4 per item); the
 * time and the peak resident set of each, from a fresh process per run and size (warmed
 * by a dump of 10 images). A per-image cost that stays put from one size to the next is
 * linear growth; one that climbs is not.
 */
import { alternate, assertAllSucceeded, range, withService, type Context, type Section } from '../lib/context.js'
import { jsonBatch } from '../lib/service.js'
import { fmt, linearFit, MiB, num, summarize } from '../lib/stats.js'

export async function growth (ctx: Context): Promise<Section> {
  const sizes = ctx.smoke ? [10, 100] : [10, 100, 1000, 10_000]
  const { smallCount } = ctx.origins
  const urlsFor = (n: number): string[] => range(n).map((k) => ctx.origins.small(k % smallCount, k < smallCount ? undefined : k))
  // other URLs than the measured ones, which would otherwise be revalidated (P5), not downloaded
  const warmUp = jsonBatch(range(10).map((k) => ctx.origins.small(k, 1_000_000 + k)), 4)
  const results = sizes.map(() => ({ ms: [] as number[], peak: [] as number[], growth: [] as number[] }))
  // the service's own cost, not the disk's: on a tmpfs when there is one (see P1 for the difference)
  const root = ctx.storage.at(-1)!

  for (let run = 0; run < ctx.runs; run++) {
    for (const n of alternate(run, sizes)) {
      const i = sizes.indexOf(n)
      const body = jsonBatch(urlsFor(n), 4)
      await withService(ctx, {}, async (service) => {
        assertAllSucceeded('P4 warm-up', await service.dump(warmUp), 10)
        const before = service.memory()
        const outcome = await service.dump(body)
        assertAllSucceeded(`P4 ${n}`, outcome, n)
        const after = service.memory()
        results[i]!.ms.push(outcome.ms)
        results[i]!.peak.push(after.peak / MiB)
        results[i]!.growth.push(Math.max(0, after.peak - before.rss) / MiB)
      }, { root: root.dir })
    }
    ctx.progress(`P4 run ${run + 1}/${ctx.runs}: ${sizes.map((n, i) => `${n} → ${num(results[i]!.ms.at(-1)!, 0)} ms`).join(', ')}`)
  }

  const ms = results.map((r) => summarize(r.ms))
  const peak = results.map((r) => summarize(r.peak))
  const time = linearFit(sizes.map((n, i) => [n, ms[i]!.median] as const))
  const rss = linearFit(sizes.map((n, i) => [n, peak[i]!.median] as const))
  // marginal cost of the last step against the one before: linear growth keeps it about the same
  const marginal = (values: number[], i: number): number => (values[i]! - values[i - 1]!) / (sizes[i]! - sizes[i - 1]!)
  const medians = ms.map((s) => s.median)
  const last = sizes.length - 1
  const steps = sizes.slice(1).map((_, k) => marginal(medians, k + 1))
  const drift = last >= 2 ? steps[last - 1]! / steps[last - 2]! : 1
  const peaks = peak.map((s) => s.median)
  const memorySteps = sizes.slice(1).map((_, k) => marginal(peaks, k + 1) * 1024)
  const memoryDrift = last >= 2 ? memorySteps[last - 1]! / Math.max(memorySteps[last - 2]!, 1e-9) : 1
  const linear = drift <= 1.5 && time.r2 >= 0.98
  const largest = sizes[last]!

  return {
    id: 'P4',
    title: `P4 cost growth: ${sizes.join(', ')} images per dump`,
    headlines: [
      {
        figure: `P4 time per image, ${largest} images (ms)`,
        service: fmt(summarize(results[last]!.ms.map((t) => t / largest)), 3),
        baseline: '–',
        ratio: '–',
        goal: 'linear growth',
        verdict: sizes.length < 3
          ? 'not judged (fewer than 3 sizes)'
          : linear ? `linear (slope ${num(time.slope, 3)} ms/image, r² ${num(time.r2, 4)})` : `not linear (last step ${num(drift, 2)} × the one before)`
      },
      {
        figure: `P4 peak RSS, ${largest} images (MiB)`,
        service: fmt(peak[last]!, 0),
        baseline: '–',
        ratio: '–',
        goal: 'linear growth',
        verdict: sizes.length < 3
          ? 'not judged (fewer than 3 sizes)'
          : memoryDrift <= 1.5
            ? `linear or better (last step ${num(memorySteps[last - 1]!, 1)} KiB/image, the one before ${num(memorySteps[last - 2]!, 1)})`
            : `growing faster than linear (last step ${num(memoryDrift, 2)} × the one before)`
      }
    ],
    body: [
      `- Origin: ${ctx.origins.description}; ${smallCount} distinct files of ${num(ctx.origins.smallBytes / 1024, 0)} KiB, repeated with a \`?copy=<k>\` query past that so every URL is distinct.${ctx.origins.fallbackReason === undefined ? '' : ` **${ctx.origins.fallbackReason}.**`}`,
      `- Storage on ${root.description}.`,
      '- A fresh process per run and size with the defaults, warmed by a dump of 10 images; peak RSS is VmHWM after the answer; growth is that peak minus VmRSS just before the dump.',
      '',
      '| images | time ms | ms per image | images/s | peak RSS MiB | growth MiB |',
      '|---:|---:|---:|---:|---:|---:|',
      ...sizes.map((n, i) => `| ${n.toLocaleString('en-US')} | ${fmt(ms[i]!, 0)} | ${fmt(summarize(results[i]!.ms.map((t) => t / n)), 3)} | ${fmt(summarize(results[i]!.ms.map((t) => n / (t / 1000))), 0)} | ${fmt(peak[i]!, 0)} | ${fmt(summarize(results[i]!.growth), 1)} |`),
      '',
      `- Time: least-squares slope ${num(time.slope, 3)} ms per image (intercept ${num(time.intercept, 0)} ms, r² ${num(time.r2, 4)}); marginal cost per step: ${steps.map((s, k) => `${sizes[k]}→${sizes[k + 1]}: ${num(s, 3)} ms/image`).join(', ')}.${sizes.length < 3 ? '' : linear ? ' Linear: the last step costs no more per image than the one before (within 1.5×) and r² ≥ 0.98.' : ' Not linear.'}`,
      `- Memory: least-squares slope ${num(rss.slope * 1024, 1)} KiB per image (r² ${num(rss.r2, 3)}); marginal peak RSS per step: ${memorySteps.map((m, k) => `${sizes[k]}→${sizes[k + 1]}: ${num(m, 1)} KiB/image`).join(', ')}.`
    ]
  }
}
