/**
 * Micro-benchmark behind the image fetcher's file-writing design: the same download loop
 * (undici, 64 in flight, SHA-256 of every body) with four ways of writing each image to
 * `<n>.part` and renaming it, on each storage root. Prints CPU ms per image (the whole
 * process: main thread, libuv pool, worker) and images/s, median (min–max) of 5 runs.
 *
 *   node --import tsx bench/micro/fs-calls.ts
 *
 * - none: no file at all (the floor: network, parsing, hashing)
 * - promises: fs/promises FileHandle open, writev, close, then rename (what the fetcher did first)
 * - callbacks: the same four calls over the callback API (what the fetcher does now)
 * - sync: the same calls, synchronous, on the event loop (not acceptable in the service:
 *   a slow or hung disk would stall every request; here as the syscalls' own cost)
 * - worker: synchronous calls in a worker thread, jobs batched per event-loop turn
 */
import { createHash } from 'node:crypto'
import fs, { promises as fsp } from 'node:fs'
import path from 'node:path'
import { Worker } from 'node:worker_threads'
import { Agent } from 'undici'
import { servePngs } from '../lib/nginx.js'
import { fmt, summarize } from '../lib/stats.js'
import { storageRoots } from '../lib/storage.js'

interface FileJob {
  id: number
  part: string
  to: string
  data: ArrayBuffer[]
}

// The worker of the "worker" strategy (CommonJS, evaluated as is): each batch of files is
// written with synchronous calls, with one reply per batch.
const WORKER_SOURCE = `
const fs = require('node:fs')
const { parentPort } = require('node:worker_threads')
parentPort.on('message', (jobs) => {
  const replies = []
  for (const job of jobs) {
    try {
      const fd = fs.openSync(job.part, 'w')
      try { fs.writevSync(fd, job.data.map((b) => new Uint8Array(b))) } finally { fs.closeSync(fd) }
      fs.renameSync(job.part, job.to)
      replies.push([job.id, null])
    } catch (error) {
      replies.push([job.id, error.code ?? 'EIO'])
    }
  }
  parentPort.postMessage(replies)
})
`

const COUNT = 2000
const RUNS = 5
const MODES = ['none', 'promises', 'callbacks', 'sync', 'worker'] as const
type Mode = typeof MODES[number]

function promisified<T> (call: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => { if (err === null) resolve(value); else reject(err) }))
}

function workerWriter (): { write: (part: string, to: string, chunks: Buffer[]) => Promise<void>, close: () => Promise<number> } {
  const worker = new Worker(WORKER_SOURCE, { eval: true })
  const waiting = new Map<number, { resolve: () => void, reject: (error: Error) => void }>()
  let queue: Array<{ job: FileJob, transfer: ArrayBuffer[] }> = []
  let nextId = 0
  worker.on('message', (replies: Array<[number, string | null]>) => {
    for (const [id, code] of replies) {
      const w = waiting.get(id)!
      waiting.delete(id)
      if (code === null) w.resolve()
      else w.reject(Object.assign(new Error(code), { code }))
    }
  })
  return {
    write (part, to, chunks) {
      const data = chunks.map((c) => c.buffer.slice(c.byteOffset, c.byteOffset + c.length) as ArrayBuffer)
      const id = nextId++
      if (queue.length === 0) {
        setImmediate(() => {
          const batch = queue
          queue = []
          worker.postMessage(batch.map((b) => b.job), batch.flatMap((b) => b.transfer))
        })
      }
      queue.push({ job: { id, part, to, data }, transfer: data })
      return new Promise((resolve, reject) => waiting.set(id, { resolve, reject }))
    },
    close: () => worker.terminate()
  }
}

async function measure (mode: Mode, origin: string, dir: string, agent: Agent, writer: ReturnType<typeof workerWriter> | undefined): Promise<{ cpu: number, rate: number }> {
  fs.mkdirSync(dir, { recursive: true })
  const one = async (n: number): Promise<void> => {
    const res = await agent.request({ origin, path: `/img/${n}.png`, method: 'GET' })
    const hash = createHash('sha256')
    const chunks: Buffer[] = []
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash.update(chunk)
      chunks.push(chunk)
    }
    hash.digest('hex')
    const part = path.join(dir, `${n}.part`)
    const to = path.join(dir, `${n}.png`)
    if (mode === 'promises') {
      const handle = await fsp.open(part, 'w')
      await handle.writev(chunks)
      await handle.close()
      await fsp.rename(part, to)
    } else if (mode === 'callbacks') {
      const fd = await promisified<number>((cb) => fs.open(part, 'w', cb))
      await promisified<number>((cb) => fs.writev(fd, chunks, cb))
      await promisified<void>((cb) => fs.close(fd, (err) => cb(err ?? null, undefined)))
      await promisified<void>((cb) => fs.rename(part, to, (err) => cb(err, undefined)))
    } else if (mode === 'sync') {
      const fd = fs.openSync(part, 'w')
      fs.writevSync(fd, chunks)
      fs.closeSync(fd)
      fs.renameSync(part, to)
    } else if (mode === 'worker') {
      await writer!.write(part, to, chunks)
    }
  }
  let next = 0
  const cpu = process.cpuUsage()
  const started = performance.now()
  await Promise.all(Array.from({ length: 64 }, async () => { while (next < COUNT) await one(next++) }))
  const ms = performance.now() - started
  const used = process.cpuUsage(cpu)
  await fsp.rm(dir, { recursive: true, force: true })
  return { cpu: (used.user + used.system) / 1000 / COUNT, rate: COUNT / (ms / 1000) }
}

async function main (): Promise<void> {
  const { tmp, nginx } = await servePngs(COUNT, 20 * 1024)
  const roots = storageRoots(tmp, true)
  const agent = new Agent({ connections: 64 })
  const writer = workerWriter()
  try {
    process.stdout.write(`${COUNT} × 20 KiB from nginx, 64 in flight; CPU ms per image and images/s, median (min–max) of ${RUNS} runs\n\n`)
    process.stdout.write('| storage | strategy | CPU ms/image | images/s |\n|---|---|---:|---:|\n')
    for (const root of roots) {
      const results = new Map<Mode, Array<{ cpu: number, rate: number }>>(MODES.map((m) => [m, []]))
      let serial = 0
      for (const mode of MODES) await measure(mode, nginx.baseUrl, path.join(root.dir, `warm-${serial++}`), agent, writer)
      for (let run = 0; run < RUNS; run++) {
        // every strategy once per run, in rotating order, so a busy moment of the machine is shared
        for (let k = 0; k < MODES.length; k++) {
          const mode = MODES[(run + k) % MODES.length]!
          results.get(mode)!.push(await measure(mode, nginx.baseUrl, path.join(root.dir, `run-${serial++}`), agent, writer))
        }
      }
      for (const mode of MODES) {
        const r = results.get(mode)!
        process.stdout.write(`| ${root.description} | ${mode} | ${fmt(summarize(r.map((x) => x.cpu)), 3)} | ${fmt(summarize(r.map((x) => x.rate)), 0)} |\n`)
      }
    }
  } finally {
    await writer.close()
    await agent.close()
    await nginx.stop()
    for (const root of roots) fs.rmSync(root.dir, { recursive: true, force: true })
  }
}

main().then(() => process.exit(0), (error: unknown) => {
  process.stderr.write(`${error instanceof Error ? error.stack ?? error.message : String(error)}\n`)
  process.exit(1)
})
