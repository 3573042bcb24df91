/**
 * Micro-benchmark of the image fetcher alone (no HTTP API, no database): 2000 × 20 KiB
 * from nginx through `createImageFetcher` (concurrency 64, perHost 64), this checkout's
 * build against another one, alternately, on each storage root. Prints CPU ms per image
 * (whole process) and images/s, median (min–max) of 7 runs.
 *
 *   npm run build && node --import tsx bench/micro/fetcher.ts --baseline /path/to/other/checkout
 *
 * The other checkout must be built (its dist/plugins/image-fetcher.js is imported).
 */
import fs from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { servePngs } from '../lib/nginx.js'
import { ROOT } from '../lib/service.js'
import { fmt, summarize } from '../lib/stats.js'
import { storageRoots } from '../lib/storage.js'

const COUNT = 2000
const RUNS = 7

interface Fetcher {
  fetchImage (url: string, target: { dir: string, name: string }): Promise<{ status: string }>
  close (): Promise<void>
}
type Create = (options: Record<string, unknown>) => Fetcher

async function load (checkout: string): Promise<Create> {
  const file = path.resolve(checkout, 'dist', 'plugins', 'image-fetcher.js')
  if (!fs.existsSync(file)) throw new Error(`${file} does not exist: build that checkout first`)
  return ((await import(pathToFileURL(file).href)) as { createImageFetcher: Create }).createImageFetcher
}

async function main (): Promise<void> {
  const { values } = parseArgs({ options: { baseline: { type: 'string' } } })
  if (values.baseline === undefined) throw new Error('usage: node --import tsx bench/micro/fetcher.ts --baseline <built checkout>')
  const builds = [
    { label: `baseline (${values.baseline})`, create: await load(values.baseline) },
    { label: 'this checkout', create: await load(ROOT) }
  ]
  const { tmp, nginx } = await servePngs(COUNT, 20 * 1024)
  const roots = storageRoots(tmp, true)
  try {
    process.stdout.write(`${COUNT} × 20 KiB from nginx through createImageFetcher (64 in flight); CPU ms per image and images/s, median (min–max) of ${RUNS} runs\n\n`)
    process.stdout.write('| storage | build | CPU ms/image | images/s |\n|---|---|---:|---:|\n')
    for (const root of roots) {
      const fetchers = builds.map((b) => b.create({ storageDir: path.join(root.dir, 'images'), timeoutMs: 30_000, concurrency: 64, perHost: 64, maxImageBytes: 25 * 1024 * 1024, allowPrivateNetworks: true }))
      const results = builds.map(() => [] as Array<{ cpu: number, rate: number }>)
      let serial = 0
      const dump = async (i: number): Promise<{ cpu: number, rate: number }> => {
        const dir = String(serial++)
        const cpu = process.cpuUsage()
        const started = performance.now()
        const outcomes = await Promise.all(Array.from({ length: COUNT }, (_, n) => fetchers[i]!.fetchImage(`${nginx.baseUrl}/img/${n}.png`, { dir, name: String(n + 1) })))
        const ms = performance.now() - started
        const used = process.cpuUsage(cpu)
        if (outcomes.some((o) => o.status !== 'SUCCESS')) throw new Error(`a download failed: ${JSON.stringify(outcomes.find((o) => o.status !== 'SUCCESS'))}`)
        fs.rmSync(path.join(root.dir, 'images', dir), { recursive: true, force: true })
        return { cpu: (used.user + used.system) / 1000 / COUNT, rate: COUNT / (ms / 1000) }
      }
      for (let i = 0; i < builds.length; i++) await dump(i) // warm-up
      for (let run = 0; run < RUNS; run++) {
        for (let k = 0; k < builds.length; k++) {
          const i = (run + k) % builds.length
          results[i]!.push(await dump(i))
        }
      }
      for (const [i, build] of builds.entries()) {
        process.stdout.write(`| ${root.description} | ${build.label} | ${fmt(summarize(results[i]!.map((r) => r.cpu)), 3)} | ${fmt(summarize(results[i]!.map((r) => r.rate)), 0)} |\n`)
      }
      await Promise.all(fetchers.map((f) => f.close()))
    }
  } finally {
    await nginx.stop()
    for (const root of roots) fs.rmSync(root.dir, { recursive: true, force: true })
  }
}

main().then(() => process.exit(0), (error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
