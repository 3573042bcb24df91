/**
 * P3 memory: 100 images of 8 MiB in one dump, then of 16 MiB; the peak resident set
 * (VmHWM) of a freshly started service process, read after the answer. Streaming means
 * the peak should not depend on the image size. Measured as `npm start` runs the service
 * (with what its start script sets: glibc's malloc settings act only before the process
 * starts, so the service cannot set them itself), and as plain `node dist/server.js`
 * without them, to show what they buy.
 */
import { alternate, assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { jsonBatch, SERVER_JS, startCommand } from '../lib/service.js'
import { fmt, MiB, num, summarize } from '../lib/stats.js'

export const P3_SIZES_MIB = [8, 16]
export const P3_SMOKE_SIZES_MIB = [1, 2]
export const MALLOC_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2', MALLOC_MMAP_THRESHOLD_: '131072' }
const GOAL_MIB = 200

interface Variant {
  label: string
  env: Record<string, string>
  /** false: plain `node dist/server.js`, without the start script's settings */
  asStarted: boolean
}

export async function memory (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 4 : 100
  const sizes = ctx.smoke ? P3_SMOKE_SIZES_MIB : P3_SIZES_MIB
  // MAX_IMAGE_BYTES must let the largest image through (the default, 25 MiB, does); set it so the run says so
  const limit = { MAX_IMAGE_BYTES: String(Math.max(...sizes) * 2 * MiB) }
  const start = ctx.otherBuild ? null : startCommand(SERVER_JS)
  const adds = start === null ? '' : [...Object.entries(start.env).map(([k, v]) => `${k}=${v}`), ...start.nodeArgs].join(' ')
  const variants: Variant[] = adds === ''
    ? [
        { label: 'as started (glibc defaults)', env: limit, asStarted: true },
        { label: `with ${Object.entries(MALLOC_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}`, env: { ...limit, ...MALLOC_ENV }, asStarted: true }
      ]
    : [
        { label: `as \`npm start\` runs it (${adds})`, env: limit, asStarted: true },
        { label: 'plain `node dist/server.js` (glibc defaults)', env: limit, asStarted: false }
      ]
  const cases = variants.flatMap((variant) => sizes.map((mib) => ({ variant, mib, peak: [] as number[], before: [] as number[], ms: [] as number[] })))
  // 1.6 GB per run: on a tmpfs when there is one, which is quicker and does not change the process's RSS
  const root = ctx.storage.at(-1)!

  for (let run = 0; run < ctx.runs; run++) {
    for (const c of alternate(run, cases)) {
      const body = jsonBatch(range(count).map((n) => ctx.origins.big(c.mib, n)), 4)
      await withService(ctx, c.variant.env, async (service) => {
        const before = service.memory()
        const outcome = await service.dump(body)
        assertAllSucceeded(`P3 ${c.mib} MiB`, outcome, count)
        const after = service.memory()
        c.peak.push(after.peak / MiB)
        c.before.push(before.rss / MiB)
        c.ms.push(outcome.ms)
      }, { root: root.dir, asStarted: c.variant.asStarted })
    }
    ctx.progress(`P3 run ${run + 1}/${ctx.runs}: peak ${cases.map((c) => `${c.mib} MiB${c.variant === variants[0] ? '' : ' tuned'} ${num(c.peak.at(-1)!, 0)}`).join(', ')} MiB`)
  }

  const headlines: Headline[] = []
  const rows: string[] = []
  for (const variant of variants) {
    const mine = cases.filter((c) => c.variant === variant)
    for (const c of mine) {
      const peak = summarize(c.peak)
      headlines.push({
        figure: `P3 peak RSS, ${count} × ${c.mib} MiB, ${variant.label} (MiB)`,
        service: fmt(peak, 0),
        baseline: '–',
        ratio: '–',
        goal: `≤ ${GOAL_MIB} MiB`,
        verdict: peak.median <= GOAL_MIB ? 'met' : `not met (${num(peak.median - GOAL_MIB, 0)} MiB over)`
      })
      rows.push(`| ${variant.label} | ${c.mib} MiB | ${fmt(peak, 0)} | ${fmt(summarize(c.before), 0)} | ${fmt(summarize(c.peak.map((p, i) => p - c.before[i]!)), 0)} | ${fmt(summarize(c.ms), 0)} | ${fmt(summarize(c.ms.map((ms) => count * c.mib / (ms / 1000))), 0)} |`)
    }
    const growth = summarize(mine[1]!.peak.map((p, run) => p / mine[0]!.peak[run]!))
    headlines.push({
      figure: `P3 peak RSS when the image size doubles (${sizes[1]} ÷ ${sizes[0]} MiB), ${variant.label}`,
      service: fmt(growth, 2),
      baseline: '–',
      ratio: '–',
      goal: 'flat (≈ 1.0)',
      verdict: growth.median <= 1.1 ? 'met' : `not met (+${num((growth.median - 1) * 100, 0)} %)`
    })
  }

  return {
    id: 'P3',
    title: `P3 memory: ${count} images of ${sizes.join(' and ')} MiB`,
    headlines,
    body: [
      `- Origin: ${ctx.origins.description} (one file per size; \`?i=<n>\` makes the ${count} URLs distinct).${ctx.origins.fallbackReason === undefined ? '' : ` **${ctx.origins.fallbackReason}.**`}`,
      `- Storage on ${root.description}. A freshly started process per run, size and variant (defaults, plus MAX_IMAGE_BYTES=${limit.MAX_IMAGE_BYTES}); VmHWM from /proc/<pid>/status after the answer. "RSS before" is VmRSS after start and login, just before the dump; "growth" is the peak minus that.`,
      '',
      '| variant | image size | peak RSS MiB | RSS before MiB | growth MiB | dump time ms | MiB/s |',
      '|---|---:|---:|---:|---:|---:|---:|',
      ...rows
    ]
  }
}
