import { rm } from 'node:fs/promises'
import path from 'node:path'
import type { Origins } from './origins.js'
import type { StorageRoot } from './storage.js'
import { startService, type Service } from './service.js'

export interface Context {
  smoke: boolean
  /** measured runs per figure */
  runs: number
  /** the run's temporary folder; everything is written inside it (or inside `storage`) */
  tmp: string
  /** where services and curl write: the temporary folder's disk first, then a tmpfs when there is one */
  storage: StorageRoot[]
  origins: Origins
  /** the curl binary, or null with the reason in curlSkipReason */
  curl: string | null
  curlSkipReason?: string
  /** service settings from --env, applied to every scenario */
  env: Record<string, string>
  /** true when another build is measured (--server): this checkout's defaults may not be its defaults */
  otherBuild: boolean
  /** the previous build's dist/server.js (--previous), for figures measured against it in the same run */
  previousServerJs?: string
  progress (message: string): void
}

/** One line of the summary table at the top of the report. */
export interface Headline {
  figure: string
  service: string
  baseline: string
  ratio: string
  goal: string
  verdict: string
}

export interface Section {
  id: string
  title: string
  headlines: Headline[]
  /** markdown: settings, per-run table, observations */
  body: string[]
}

let serial = 0

/** A fresh service (new database, empty STORAGE_DIR) for `fn`, stopped and deleted afterwards. */
export async function withService<T> (ctx: Context, env: Record<string, string>, fn: (service: Service) => Promise<T>, options: { nodeArgs?: string[], root?: string, serverJs?: string, asStarted?: boolean } = {}): Promise<T> {
  const workDir = path.join(options.root ?? ctx.tmp, `service-${++serial}`)
  const service = await startService({
    workDir,
    env: { ...env, ...ctx.env },
    nodeArgs: options.nodeArgs ?? [],
    ...(options.serverJs === undefined ? {} : { serverJs: options.serverJs }),
    ...(options.asStarted === undefined ? {} : { asStarted: options.asStarted })
  })
  try {
    return await fn(service)
  } finally {
    await service.stop()
    await rm(workDir, { recursive: true, force: true })
  }
}

/** Throws unless every image of a dump succeeded: a benchmark of failures measures nothing. */
export function assertAllSucceeded (what: string, outcome: { images: number, succeeded: number, failures: unknown[] }, expected: number): void {
  if (outcome.images !== expected || outcome.succeeded !== expected) {
    throw new Error(`${what}: ${outcome.succeeded} of ${outcome.images} images succeeded (expected ${expected}); e.g. ${JSON.stringify(outcome.failures)}`)
  }
}

export const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i)

/** `a, b` for the run's order, alternating so neither side always goes first. */
export function alternate<T> (run: number, items: readonly T[]): T[] {
  const shift = run % items.length
  return [...items.slice(shift), ...items.slice(0, shift)]
}
