/**
 * P2 latency: 200 images that the origin answers after 500 ms each, in one dump. With
 * enough images in flight the answer comes after one origin delay plus overhead; a limit
 * below 200 (globally or per host) adds a whole delay per wave. Measured with the
 * defaults and with the count of 64 that was the default before the memory budget, on
 * each storage root, against curl fetching every URL at once (`--parallel-max` = the
 * number of images), and against a bare undici client (bench/lib/bare-client.ts) fetching
 * the same URLs at once and keeping nothing: the floor under any Node.js service on this
 * machine, with this origin. The goal is absolute (1.1 × the delay); the floor says how much
 * of what is left over it is the machine's.
 */
import { rm } from 'node:fs/promises'
import path from 'node:path'
import { defaults } from '../../config.js'
import { START_RESERVATION_BYTES } from '../../plugins/image-fetcher.js'
import { startBareClient } from '../lib/bare-client.js'
import { alternate, assertAllSucceeded, range, withService, type Context, type Headline, type Section } from '../lib/context.js'
import { curlParallel } from '../lib/curl.js'
import { jsonBatch, type Service } from '../lib/service.js'
import type { StorageRoot } from '../lib/storage.js'
import { fmt, num, summarize, type Summary } from '../lib/stats.js'

interface Setting {
  label: string
  env: Record<string, string>
  root: StorageRoot
  /** images in flight at once, when known */
  slots?: number
}

export async function latency (ctx: Context): Promise<Section> {
  const count = ctx.smoke ? 20 : 200
  const delayMs = ctx.smoke ? 200 : 500
  const goalMs = 1.1 * delayMs
  const urls = range(count).map((n) => ctx.origins.delayed(delayMs, n + 1))
  const body = jsonBatch(urls, 4)
  const warmUp = jsonBatch(range(count).map((n) => ctx.origins.node.url(`/png/${n + 1}`)), 4)
  // the default before downloads were limited by memory (DOWNLOAD_MEMORY_BYTES)
  const narrow = '64'
  const list: Setting[] = ctx.storage.flatMap((root): Setting[] => [
    {
      label: ctx.otherBuild ? 'defaults of the build under test' : `defaults (DOWNLOAD_CONCURRENCY=${defaults.downloadConcurrency}, DOWNLOAD_PER_HOST=${defaults.downloadPerHost}, DOWNLOAD_MEMORY_BYTES=${defaults.downloadMemoryBytes})`,
      env: {},
      root,
      ...(ctx.otherBuild ? {} : { slots: Math.min(defaults.downloadConcurrency, defaults.downloadPerHost) })
    },
    { label: `DOWNLOAD_CONCURRENCY=${narrow}, DOWNLOAD_PER_HOST=${narrow}`, env: { DOWNLOAD_CONCURRENCY: narrow, DOWNLOAD_PER_HOST: narrow }, root, slots: Number(narrow) }
  ])
  const times: number[][] = list.map(() => [])
  const curlTimes: number[] = []
  const bareTimes: number[] = []
  const bare = startBareClient()

  // One warm process per setting, all alive at once, so every run measures each of them and curl in turn.
  const services: Service[] = []
  let release = (): void => {}
  const released = new Promise<void>((resolve) => { release = resolve })
  const lifetimes: Array<Promise<void>> = []
  const ready = list.map((setting, i) => new Promise<void>((resolve, reject) => {
    lifetimes.push(withService(ctx, setting.env, async (service) => {
      assertAllSucceeded('P2 warm-up', await service.dump(warmUp), count)
      services[i] = service
      resolve()
      await released
    }, { root: setting.root.dir }).catch(reject))
  }))
  try {
    await Promise.all(ready)
    await bare.fetch(range(count).map((n) => ctx.origins.node.url(`/png/${n + 1}`)))
    for (let run = 0; run < ctx.runs; run++) {
      for (const side of alternate(run, ['service', 'bare', 'curl'] as const)) {
        if (side === 'service') {
          for (const [i, service] of services.entries()) {
            const outcome = await service.dump(body)
            assertAllSucceeded('P2', outcome, count)
            times[i]!.push(outcome.ms)
          }
        } else if (side === 'bare') {
          bareTimes.push((await bare.fetch(urls)).ms)
        } else if (ctx.curl !== null) {
          const outDir = path.join(ctx.tmp, `p2-curl-${run}`)
          curlTimes.push((await curlParallel(ctx.curl, urls, outDir, count)).ms)
          await rm(outDir, { recursive: true, force: true })
          await rm(`${outDir}.curlrc`, { force: true })
        }
      }
      ctx.progress(`P2 run ${run + 1}/${ctx.runs}: ${times.map((t, i) => `${list[i]!.root.label} ${num(t.at(-1)!, 0)} ms`).join(', ')}, bare undici ${num(bareTimes.at(-1)!, 0)} ms${ctx.curl === null ? '' : `, curl ${num(curlTimes.at(-1)!, 0)} ms`}`)
    }
  } finally {
    await bare.stop()
    release()
    await Promise.allSettled(lifetimes)
  }

  const summaries = times.map((t) => summarize(t))
  const curl = curlTimes.length === 0 ? undefined : summarize(curlTimes)
  const verdict = (s: Summary): string => s.median <= goalMs ? 'met' : `not met (${num(s.median / delayMs, 2)} × the delay)`
  const floor = summarize(bareTimes)
  const ratio = (i: number): string => fmt(summarize(times[i]!.map((t, run) => bareTimes[run]! / t)), 2)
  const waves = (slots: number | undefined): string => slots === undefined ? '?' : String(Math.ceil(count / slots))

  return {
    id: 'P2',
    title: `P2 latency: ${count} images answered after ${delayMs} ms each`,
    headlines: list.map((setting, i): Headline => ({
      figure: `P2 latency, ${count} × ${delayMs} ms, ${setting.env.DOWNLOAD_CONCURRENCY === undefined ? 'defaults' : setting.label}, storage on ${setting.root.label} (ms)`,
      service: fmt(summaries[i]!, 0),
      baseline: `${fmt(floor, 0)} bare undici`,
      ratio: ratio(i),
      goal: `≤ ${num(goalMs, 0)} ms`,
      verdict: verdict(summaries[i]!)
    })),
    body: [
      `- Origin: the Node test origin, \`/delay/${delayMs}/png/<n>\` (${count} distinct URLs, one host).`,
      '- Each setting has its own warm process (a warm-up dump of the same number of undelayed images first); every run measures each setting, the bare client and curl, alternating which goes first. The ratio is bare client time ÷ service time (1: the service adds nothing to what any Node.js client needs here).',
      `- Floor: a bare undici client in a process of its own (\`bench/bare-client.mjs\`, plain \`node\`, warmed up the same way): one Agent with ${count} connections, every URL at once, each body read to its end and kept nowhere; no validation, storage or database. What a Node.js service needs on this machine for these answers at the least.`,
      ctx.curl === null ? `- Baseline skipped: ${ctx.curlSkipReason ?? 'curl not found'}.` : `- Baseline: curl --parallel --parallel-max ${count} (every URL at once, one wave like the service with its defaults) into ${ctx.storage[0]!.description}: what one wave of these answers costs on this machine with this origin, without the service's work.`,
      `- Goal: the answer within 1.1 × ${delayMs} ms = ${num(goalMs, 0)} ms. ⌈${count} ÷ min(DOWNLOAD_CONCURRENCY, DOWNLOAD_PER_HOST)⌉ waves × ${delayMs} ms is a lower bound (a request waiting for its answer reserves ${START_RESERVATION_BYTES / 1024} KiB of DOWNLOAD_MEMORY_BYTES, so the default budget lets ${Math.floor(defaults.downloadMemoryBytes / START_RESERVATION_BYTES)} wait at once).`,
      '',
      '| setting | storage | answer ms, median (min–max) | waves | goal |',
      '|---|---|---:|---:|---|',
      ...list.map((setting, i) => `| ${setting.label} | ${setting.root.description} | ${fmt(summaries[i]!, 0)} | ${waves(setting.slots)} | ${verdict(summaries[i]!)} |`),
      `| bare undici client (the floor) | nothing stored | ${fmt(floor, 0)} | 1 | ${verdict(floor)} |`,
      ...(curl === undefined ? [] : [`| curl --parallel-max ${count} | ${ctx.storage[0]!.description} | ${fmt(curl, 0)} | ${waves(count)} | ${verdict(curl)} |`])
    ]
  }
}
