/**
 * Soak: the service under a steady load of dumps for a long time, watching for what only
 * time shows: memory that grows, an event loop that gets slower, throughput that decays.
 *
 *   npm run soak -- --minutes 3 [--clients 8] [--images 20] [--kb 4] [--sample 5] [--out soak.json] [--tsx] [--keep-files]
 *
 * - The service is the built `dist/server.js` (what `npm start` runs; `npm run soak` builds
 *   it first), or the TypeScript sources with --tsx, in a process of its own, on SQLite in a
 *   temporary folder, with a plan limit no soak reaches (PLANS=gold=1000000000,...).
 * - The origin is test/helpers/origin.ts in this process; every image is a distinct PNG.
 * - `clients` loops each post a batch of `images` images (4 per item) and wait for the
 *   answer, then post again. Each answered dump's folder is removed by the soak, so the disk
 *   stays flat over long runs (the service never looks at a dump's files again).
 * - RSS comes from /proc/<pid>/status (VmRSS); heap figures and the event-loop delay come
 *   from bench/soak-probe.mjs, loaded into the service with `node --import` for the soak
 *   only; /health round trips are timed from outside as the client-side view.
 * - Throughput in the last minute is reported as a ratio to the first minute after the
 *   warm-up: a cost that grows with the history (every dump adds to it) shows there. The
 *   SQLite file and its WAL are measured at every sample.
 * - Memory slopes are least-squares fits over the samples after the warm-up (the first
 *   fifth of the run, at least 30 s but at most half of it), against time and against dumps
 *   done; the event-loop delay is also counted from the end of the warm-up only.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Agent, request } from 'undici'
import { sha256Hex } from '../lib/password.js'
import { startOrigin } from '../test/helpers/origin.js'
import { freePort } from './lib/net.js'
import { linearFit } from './lib/stats.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const MiB = 1024 * 1024

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '3' },
    clients: { type: 'string', default: '8' },
    images: { type: 'string', default: '20' },
    kb: { type: 'string', default: '4' },
    sample: { type: 'string', default: '5' },
    out: { type: 'string' },
    tsx: { type: 'boolean', default: false },
    'keep-files': { type: 'boolean', default: false }
  }
})

function positive (name: string, value: string | undefined): number {
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`soak: --${name} must be a positive number, got ${JSON.stringify(value)}\n`)
    process.exit(64)
  }
  return n
}

const minutes = positive('minutes', args.minutes)
const clients = Math.round(positive('clients', args.clients))
const imagesPerDump = Math.round(positive('images', args.images))
const kb = positive('kb', args.kb)
const sampleMs = positive('sample', args.sample) * 1000
const durationMs = minutes * 60_000
// a short trial run still keeps half of itself for the fit
const warmupMs = Math.min(Math.max(30_000, durationMs / 5), durationMs / 2)

interface ProbeSample { type: 'sample', memory: NodeJS.MemoryUsage }
interface ProbeReport { type: 'report', resolutionMs: number, count: number, p50: number, p90: number, p99: number, max: number, mean: number }
interface Sample { t: number, dumps: number, images: number, rss: number, heapUsed: number, external: number, arrayBuffers: number, dbBytes: number, walBytes: number }

function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

function vmRss (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)
  return kib === null ? NaN : Number(kib[1]) * 1024
}

/** A file's size, 0 while it does not exist (SQLite removes its WAL when the last connection closes). */
function sizeOf (file: string): number {
  try {
    return statSync(file).size
  } catch {
    return 0
  }
}

const f = (value: number, digits = 1): string => Number.isFinite(value) ? value.toFixed(digits) : String(value)

async function main (): Promise<void> {
  const work = await mkdtemp(join(os.tmpdir(), 'image-dump-soak-'))
  const storageDir = join(work, 'images')
  const databaseFile = join(work, 'soak.db')
  const origin = await startOrigin()
  const port = await freePort()
  const baseUrl = `http://127.0.0.1:${port}`
  const probe = pathToFileURL(join(ROOT, 'bench', 'soak-probe.mjs')).href
  const entry = args.tsx ? ['--import', 'tsx', '--import', probe, 'server.ts'] : ['--import', probe, 'dist/server.js']
  const env = {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    DATABASE_URL: `sqlite:${databaseFile}`,
    STORAGE_DIR: storageDir,
    ALLOW_PRIVATE_NETWORKS: 'true',
    PLANS: 'gold=1000000000,silver=50,bronze=25',
    // one login for the whole run: a new login would end the tokens of the other clients
    TOKEN_EXPIRY: String(Math.ceil(durationMs / 1000) + 3600),
    LOG_LEVEL: 'warn'
  }
  const child: ChildProcess = spawn(process.execPath, entry, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-20_000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<number | string | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
  let exitedEarly = false
  void exited.then(() => { exitedEarly = true })

  // The probe answers one message at a time, in order.
  const probeAnswers: Array<(message: ProbeSample | ProbeReport) => void> = []
  child.on('message', (message) => probeAnswers.shift()?.(message as ProbeSample | ProbeReport))
  const ask = <T extends ProbeSample | ProbeReport>(what: string): Promise<T> =>
    new Promise((resolve) => { probeAnswers.push(resolve as (m: ProbeSample | ProbeReport) => void); child.send(what) })

  const agent = new Agent({ connections: clients + 4, keepAliveTimeout: 30_000 })
  const call = async (method: 'GET' | 'POST', path: string, headers: Record<string, string> = {}, body?: string) => {
    const response = await request(`${baseUrl}${path}`, { method, headers, body, dispatcher: agent })
    return { status: response.statusCode, body: await response.body.text() }
  }

  // Ready when /health answers: at LOG_LEVEL=warn the service prints nothing when it listens.
  for (const deadline = Date.now() + 60_000; ;) {
    if (exitedEarly) throw new Error(`the service exited before it was ready:\n${output}`)
    try {
      if ((await call('GET', '/health')).status === 200) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`the service was not ready within 60 s:\n${output}`)
    await sleep(100)
  }
  const pid = child.pid!

  const login = await call('POST', '/v1/auth/token', { 'content-type': 'application/json' }, JSON.stringify({ username: 'alice', passwordHash: sha256Hex('gold-password') }))
  if (login.status !== 200) throw new Error(`login failed: ${login.status} ${login.body}`)
  const token = JSON.parse(login.body).access_token as string
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }

  let dumps = 0
  let images = 0
  let failedImages = 0
  let refused = 0
  const refusals = new Map<string, number>()
  const dumpMs: number[] = []
  const healthMs: number[] = []
  const samples: Sample[] = []
  let imageCounter = 0
  // an object, since the loops below read what a later await changes
  const state = { stopping: false }
  const started = performance.now()
  const elapsed = (): number => performance.now() - started

  function batch (): string {
    const urls = Array.from({ length: imagesPerDump }, () => origin.url(`/png/${(imageCounter++ % 65_536)}?bytes=${Math.round(kb * 1024)}`))
    const items = []
    for (let i = 0; i < urls.length; i += 4) items.push({ name: `soak item ${i / 4}`, brand: 'Soak', images: urls.slice(i, i + 4) })
    return JSON.stringify({ items })
  }

  async function client (): Promise<void> {
    while (!state.stopping) {
      const sent = performance.now()
      let response: { status: number, body: string }
      try {
        response = await call('POST', '/v1/dumps', headers, batch())
      } catch (error) {
        if (state.stopping) return
        refused++
        const key = `network: ${error instanceof Error ? error.message : String(error)}`
        refusals.set(key, (refusals.get(key) ?? 0) + 1)
        await sleep(100) // a refused connection must not turn this loop into a busy spin
        continue
      }
      if (response.status !== 200) {
        refused++
        const key = `${response.status}: ${response.body.slice(0, 200)}`
        refusals.set(key, (refusals.get(key) ?? 0) + 1)
        continue
      }
      dumpMs.push(performance.now() - sent)
      const answer = JSON.parse(response.body) as { requestId: number, items: Array<{ images: Array<{ status: string }> }> }
      const outcomes = answer.items.flatMap((item) => item.images)
      dumps++
      images += outcomes.length
      failedImages += outcomes.filter((image) => image.status !== 'SUCCESS').length
      // alice is user 1 of users.txt: <storage>/1/<requestId>
      if (!args['keep-files']) await rm(join(storageDir, '1', String(answer.requestId)), { recursive: true, force: true })
    }
  }

  async function healthProbe (): Promise<void> {
    while (!state.stopping) {
      const sent = performance.now()
      try {
        await call('GET', '/health')
        healthMs.push(performance.now() - sent)
      } catch {}
      await sleep(200)
    }
  }

  async function sample (): Promise<void> {
    const { memory } = await ask<ProbeSample>('probe:sample')
    samples.push({ t: elapsed(), dumps, images, rss: vmRss(pid), heapUsed: memory.heapUsed, external: memory.external, arrayBuffers: memory.arrayBuffers, dbBytes: sizeOf(databaseFile), walBytes: sizeOf(`${databaseFile}-wal`) })
  }

  process.stdout.write(`soak: ${minutes} min, ${clients} clients × ${imagesPerDump}-image dumps (${kb} KiB PNGs), service pid ${pid} (${args.tsx ? 'sources via tsx' : 'dist/server.js'}), warm-up ${f(warmupMs / 1000, 0)} s\n`)
  await sample()
  child.send('probe:reset') // the start-up (module loading, migrations) is no part of the figures
  const loops = [...Array.from({ length: clients }, () => client()), healthProbe()]
  let warmedUp = false
  let lastPrint = 0
  while (elapsed() < durationMs) {
    await sleep(Math.min(sampleMs, durationMs - elapsed()))
    if (exitedEarly) throw new Error(`the service died during the soak:\n${output}`)
    await sample()
    if (!warmedUp && elapsed() >= warmupMs) {
      warmedUp = true
      child.send('probe:reset') // unanswered, so the answers to the other messages stay in order
    }
    if (elapsed() - lastPrint >= 30_000) {
      lastPrint = elapsed()
      const s = samples[samples.length - 1]!
      process.stdout.write(`  ${f(s.t / 1000, 0)} s: ${dumps} dumps, ${images} images, RSS ${f(s.rss / MiB)} MiB, heap ${f(s.heapUsed / MiB)} MiB\n`)
    }
  }
  const eld = await ask<ProbeReport>('probe:report')
  state.stopping = true
  await Promise.all(loops)
  await sample()
  const wallS = elapsed() / 1000

  child.kill('SIGTERM')
  const exitCode = await exited
  await agent.close()
  await origin.close()
  await rm(work, { recursive: true, force: true })

  // --- report -------------------------------------------------------------------------
  const after = samples.filter((s) => s.t >= warmupMs)
  const rssPerMin = linearFit(after.map((s) => [s.t / 60_000, s.rss / MiB] as const))
  const rssPer10k = linearFit(after.map((s) => [s.dumps / 10_000, s.rss / MiB] as const))
  const heapPerMin = linearFit(after.map((s) => [s.t / 60_000, s.heapUsed / MiB] as const))
  const heapPer10k = linearFit(after.map((s) => [s.dumps / 10_000, s.heapUsed / MiB] as const))
  const rss = samples.map((s) => s.rss)
  const sortedDump = [...dumpMs].sort((a, b) => a - b)
  const sortedHealth = [...healthMs].sort((a, b) => a - b)
  const less = (v: number): number => Math.max(0, v - eld.resolutionMs)
  // throughput in the first and the last minute after warm-up, to see decay
  const rate = (from: Sample | undefined, to: Sample | undefined): number =>
    from === undefined || to === undefined || to.t === from.t ? NaN : (to.images - from.images) / ((to.t - from.t) / 1000)
  const firstAfter = after[0]
  const minuteLater = after.find((s) => firstAfter !== undefined && s.t >= firstAfter.t + 60_000)
  const last = after[after.length - 1]
  const minuteBefore = [...after].reverse().find((s) => last !== undefined && s.t <= last.t - 60_000)

  const report = {
    date: new Date().toISOString(),
    machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model.trim(), memory: `${f(os.totalmem() / 2 ** 30)} GiB`, node: process.version, kernel: os.release() },
    settings: { minutes, clients, imagesPerDump, kb, service: args.tsx ? 'tsx server.ts' : 'dist/server.js', database: 'sqlite', warmupS: warmupMs / 1000 },
    dumps,
    images,
    failedImages,
    refused,
    refusals: Object.fromEntries(refusals),
    imagesPerSecond: images / wallS,
    dumpsPerSecond: dumps / wallS,
    imagesPerSecondFirstMinuteAfterWarmup: rate(firstAfter, minuteLater),
    imagesPerSecondLastMinute: rate(minuteBefore, last),
    /** throughput of the last minute as a ratio to the first minute after warm-up: history growing shows here */
    lastToFirstMinute: rate(minuteBefore, last) / rate(firstAfter, minuteLater),
    databaseMiB: { end: (last?.dbBytes ?? NaN) / MiB, walMax: Math.max(...samples.map((s) => s.walBytes)) / MiB, walEnd: (last?.walBytes ?? NaN) / MiB },
    dumpLatencyMs: { p50: percentile(sortedDump, 50), p99: percentile(sortedDump, 99), max: sortedDump[sortedDump.length - 1] },
    healthRoundTripMs: { p50: percentile(sortedHealth, 50), p99: percentile(sortedHealth, 99), max: sortedHealth[sortedHealth.length - 1] },
    eventLoopDelayMs: { p50: less(eld.p50), p90: less(eld.p90), p99: less(eld.p99), max: less(eld.max), samples: eld.count, note: `after warm-up, beyond the probe's ${eld.resolutionMs} ms timer` },
    rssMiB: { start: rss[0]! / MiB, end: rss[rss.length - 1]! / MiB, max: Math.max(...rss) / MiB, afterWarmup: (firstAfter?.rss ?? NaN) / MiB },
    heapUsedMiB: { start: samples[0]!.heapUsed / MiB, end: samples[samples.length - 1]!.heapUsed / MiB, max: Math.max(...samples.map((s) => s.heapUsed)) / MiB },
    slopes: {
      rssMiBPerMinute: rssPerMin.slope,
      rssMiBPer10kDumps: rssPer10k.slope,
      rssR2: rssPerMin.r2,
      heapMiBPerMinute: heapPerMin.slope,
      heapMiBPer10kDumps: heapPer10k.slope,
      heapR2: heapPerMin.r2,
      points: after.length
    },
    serviceExit: exitCode,
    samples: samples.map((s) => ({ t: Math.round(s.t), dumps: s.dumps, images: s.images, rssMiB: +(s.rss / MiB).toFixed(2), heapMiB: +(s.heapUsed / MiB).toFixed(2), walMiB: +(s.walBytes / MiB).toFixed(2) }))
  }

  const lines = [
    '',
    `soak report (${report.date}; ${report.machine.cores} cores, ${report.machine.cpu}; Node ${report.machine.node})`,
    `  ran ${f(wallS, 0)} s: ${dumps} dumps, ${images} images (${failedImages} failed), ${refused} dumps refused`,
    ...[...refusals].map(([why, n]) => `    ${n} × ${why}`),
    `  throughput: ${f(report.imagesPerSecond, 0)} images/s, ${f(report.dumpsPerSecond)} dumps/s; first minute after warm-up ${f(report.imagesPerSecondFirstMinuteAfterWarmup, 0)} images/s, last minute ${f(report.imagesPerSecondLastMinute, 0)} images/s: last ÷ first ${f(report.lastToFirstMinute, 2)} (goal ≥ 0.9 over 30 min)`,
    `  database: ${f(report.databaseMiB.end)} MiB at the end; WAL at most ${f(report.databaseMiB.walMax)} MiB, ${f(report.databaseMiB.walEnd)} MiB at the end`,
    `  dump latency: p50 ${f(report.dumpLatencyMs.p50)} ms, p99 ${f(report.dumpLatencyMs.p99)} ms, max ${f(report.dumpLatencyMs.max ?? NaN)} ms`,
    `  RSS: start ${f(report.rssMiB.start)} MiB, after warm-up ${f(report.rssMiB.afterWarmup)} MiB, end ${f(report.rssMiB.end)} MiB, max ${f(report.rssMiB.max)} MiB`,
    `  heap used: start ${f(report.heapUsedMiB.start)} MiB, end ${f(report.heapUsedMiB.end)} MiB, max ${f(report.heapUsedMiB.max)} MiB`,
    `  memory slope after warm-up (${after.length} samples): RSS ${f(rssPerMin.slope, 3)} MiB/min = ${f(rssPer10k.slope, 3)} MiB per 10k dumps (r² ${f(rssPerMin.r2, 2)}); heap ${f(heapPerMin.slope, 3)} MiB/min = ${f(heapPer10k.slope, 3)} MiB per 10k dumps (r² ${f(heapPerMin.r2, 2)})`,
    `  event-loop delay (inside, after warm-up): p50 ${f(report.eventLoopDelayMs.p50, 2)} ms, p90 ${f(report.eventLoopDelayMs.p90, 2)} ms, p99 ${f(report.eventLoopDelayMs.p99, 2)} ms, max ${f(report.eventLoopDelayMs.max, 2)} ms`,
    `  /health round trip (outside): p50 ${f(report.healthRoundTripMs.p50, 2)} ms, p99 ${f(report.healthRoundTripMs.p99, 2)} ms, max ${f(report.healthRoundTripMs.max ?? NaN, 2)} ms`,
    `  service stopped with ${String(exitCode)} after SIGTERM`,
    ''
  ]
  process.stdout.write(lines.join('\n'))
  if (args.out !== undefined) await writeFile(args.out, `${JSON.stringify(report, null, 2)}\n`)
  if (refused > 0 || failedImages > 0 || exitCode !== 0) process.exitCode = 1
}

main().catch((error: unknown) => {
  process.stderr.write(`soak failed: ${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
