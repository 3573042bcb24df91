/**
 * The service under test, as an operator runs it: the built `dist/server.js` in a process
 * of its own, started the way `npm start` starts it (the environment variables and node
 * flags of the build's `start` script: `startCommand`), on a free port, with its own SQLite
 * file and storage folder inside a temporary folder. Readiness is polled on /health (at
 * LOG_LEVEL=warn it logs nothing when it starts listening).
 */
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { track } from './children.js'
import { answers, request } from './http.js'
import { freePort, waitFor } from './net.js'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const SERVER_JS = path.join(ROOT, 'dist', 'server.js')

let measuredServerJs = SERVER_JS
/**
 * Measures another build instead of this checkout's dist/ (`--server <dir>`: a copy of the
 * project, built, e.g. before a change), for before/after figures in the same conditions.
 */
export function useServerBuild (dir: string): string {
  measuredServerJs = serverBuild(dir)
  return measuredServerJs
}

/** The dist/server.js of a built copy of the project in `dir`; throws when it is not built. */
export function serverBuild (dir: string): string {
  const file = path.resolve(dir, 'dist', 'server.js')
  if (!existsSync(file)) throw new Error(`${file} does not exist: build that copy first`)
  return file
}

/** What a `start` script sets before `node`: its leading NAME=value words, and node's flags. */
export interface StartCommand {
  /** the script as written in package.json */
  script: string
  env: Record<string, string>
  nodeArgs: string[]
}

/**
 * How `npm start` runs the build whose `dist/server.js` is `serverJs`: that project's
 * `start` script, which must read `[NAME=value …] node [--flag …] dist/server.js` (the one
 * shape this harness can reproduce without npm and sh in between, whose memory would be
 * counted otherwise). Throws for any other shape, so a figure is never labelled "as
 * started" when it was not.
 */
export function startCommand (serverJs: string): StartCommand {
  const manifest = path.join(path.dirname(path.dirname(serverJs)), 'package.json')
  const script = (JSON.parse(readFileSync(manifest, 'utf8')) as { scripts?: Record<string, string> }).scripts?.start
  if (script === undefined) throw new Error(`${manifest} has no start script`)
  const words = script.trim().split(/\s+/)
  const env: Record<string, string> = {}
  let i = 0
  for (; i < words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[i]!); i++) {
    const eq = words[i]!.indexOf('=')
    env[words[i]!.slice(0, eq)] = words[i]!.slice(eq + 1)
  }
  const nodeArgs = words.slice(i + 1, -1)
  if (words[i] !== 'node' || words.at(-1) !== 'dist/server.js' || nodeArgs.some((arg) => !arg.startsWith('--') || /['"$`\\]/.test(arg)) ||
      Object.values(env).some((value) => /['"$`\\]/.test(value))) {
    throw new Error(`the start script of ${manifest} is not \`[NAME=value …] node [--flag …] dist/server.js\`: ${JSON.stringify(script)}`)
  }
  return { script, env, nodeArgs }
}

/** What every benchmark run sets; a scenario adds its own settings on top. */
export const BASE_ENV: Readonly<Record<string, string>> = {
  ALLOW_PRIVATE_NETWORKS: 'true',
  PLANS: 'gold=1000000000,silver=50,bronze=25',
  LOG_LEVEL: 'warn'
}

export interface ServiceOptions {
  /** folder for the database and STORAGE_DIR; should be new and empty */
  workDir: string
  /** settings on top of BASE_ENV, e.g. DOWNLOAD_CONCURRENCY */
  env?: Record<string, string>
  /** extra node flags, e.g. --cpu-prof */
  nodeArgs?: string[]
  /** another build's dist/server.js to run instead (a baseline measured in the same run) */
  serverJs?: string
  /** false: plain `node dist/server.js`, without what the start script adds (to show what that buys) [true] */
  asStarted?: boolean
}

export interface DumpOutcome {
  /** request sent → last byte of the answer */
  ms: number
  images: number
  succeeded: number
  /** images the answer marks reused (the origin answered 304 to the stored validators) */
  reused: number
  /** bytes of the successful images that were downloaded (not reused), once per image */
  downloadedBytes: number
  /** a few failures, to say why a run is invalid */
  failures: unknown[]
}

export interface Service {
  pid: number
  baseUrl: string
  storageDir: string
  /** what the process was started with, on top of the inherited PATH/HOME */
  env: Record<string, string>
  dump (body: string): Promise<DumpOutcome>
  /**
   * VmHWM (peak resident set) and VmRSS of the process, in bytes; with WORKERS, the sums
   * over the supervisor and its workers (the peak a bound: each process's own peak, added)
   */
  memory (): { peak: number, rss: number }
  /** CPU time (user + system, every thread) the process (and its workers) used so far, in ms */
  cpuMs (): number
  /** the last 20,000 characters the process printed */
  output (): string
  stop (): Promise<void>
}

/** A warning when dist/ looks older than the sources (the harness measures dist/). */
export function staleBuildWarning (): string | null {
  if (!existsSync(SERVER_JS)) return `${SERVER_JS} does not exist: run \`npm run build\` first (\`npm run bench\` does)`
  // an incremental build rewrites only what changed, but always its .tsbuildinfo
  const info = path.join(ROOT, 'dist', '.tsbuildinfo')
  const built = statSync(existsSync(info) ? info : SERVER_JS).mtimeMs
  // the fetcher is composed of the modules in lib/download/, and writes through lib/object-store/
  const download = ['download', 'object-store'].flatMap((folder) => readdirSync(path.join(ROOT, 'lib', folder)).map((file) => `lib/${folder}/${file}`))
  for (const source of ['server.ts', 'app.ts', 'config.ts', 'plugins/image-fetcher.ts', 'plugins/dumps.ts', 'routes/dumps.ts', 'lib/storage-layout.ts', ...download]) {
    const file = path.join(ROOT, source)
    if (existsSync(file) && statSync(file).mtimeMs > built + 1000) return `${source} is newer than dist/: run \`npm run build\` (\`npm run bench\` does)`
  }
  return null
}

let clockTicks: number | undefined

/** CPU time (utime + stime) of a process from /proc/<pid>/stat, in ms. */
export function processCpuMs (pid: number): number {
  clockTicks ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // the command name may hold spaces and parentheses: fields are counted after the last ')'
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) * 1000 / clockTicks
}

/** `pid` and its descendants now alive (the supervisor and its workers), from /proc. */
export function processTree (pid: number): number[] {
  const tree = [pid]
  for (let i = 0; i < tree.length; i++) {
    let tasks: string[] = []
    try {
      tasks = readdirSync(`/proc/${tree[i]}/task`)
    } catch {
      continue // gone meanwhile
    }
    for (const task of tasks) {
      try {
        const children = readFileSync(`/proc/${tree[i]}/task/${task}/children`, 'utf8').trim()
        if (children !== '') tree.push(...children.split(' ').map(Number))
      } catch {}
    }
  }
  return tree
}

/** Sums `measure` over the live processes of the tree of `pid`, skipping any that ended meanwhile. */
function overTree (pid: number, measure: (pid: number) => number): number {
  let sum = 0
  for (const member of processTree(pid)) {
    try {
      sum += measure(member)
    } catch {
      if (member === pid) throw new Error(`process ${pid} is gone`)
    }
  }
  return sum
}

function statusKiB (pid: number, field: string): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status)
  if (match === null) throw new Error(`no ${field} in /proc/${pid}/status`)
  return Number(match[1]) * 1024
}

/** A JSON batch: items of `perItem` URLs each (the last one may have fewer). */
export function jsonBatch (urls: readonly string[], perItem = 4): string {
  const items = []
  for (let i = 0; i < urls.length; i += perItem) {
    items.push({ name: `Product ${i / perItem + 1}`, brand: 'Bench', category: 'Benchmark', images: urls.slice(i, i + perItem) })
  }
  return JSON.stringify({ items })
}

export async function startService (options: ServiceOptions): Promise<Service> {
  const serverJs = options.serverJs ?? measuredServerJs
  if (!existsSync(serverJs)) throw new Error(`${serverJs} does not exist: run \`npm run build\` first`)
  const storageDir = path.join(options.workDir, 'images')
  await mkdir(storageDir, { recursive: true })
  const port = await freePort()
  const started = options.asStarted === false ? { env: {}, nodeArgs: [] } : startCommand(serverJs)
  const env: Record<string, string> = {
    ...started.env,
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: `sqlite:${path.join(options.workDir, 'image-dump.db')}`,
    STORAGE_DIR: storageDir,
    USERS_FILE: path.join(ROOT, 'users.txt'),
    ...BASE_ENV,
    ...options.env
  }
  // Only PATH and HOME are inherited: the harness's own environment must not leak settings in.
  const inherited: Record<string, string> = {}
  for (const key of ['PATH', 'HOME', 'TMPDIR']) if (process.env[key] !== undefined) inherited[key] = process.env[key]!
  const child = spawn(process.execPath, [...started.nodeArgs, ...(options.nodeArgs ?? []), serverJs], {
    cwd: path.dirname(path.dirname(serverJs)),
    env: { ...inherited, ...env },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  track(child)
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-20_000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const baseUrl = `http://127.0.0.1:${port}`

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
    await exited
    clearTimeout(timer)
  }

  let token: string
  try {
    await waitFor(async () => {
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode}) before it was ready:\n${output}`)
      return await answers(`${baseUrl}/health`)
    }, 120_000, 'the service to answer /health')
    const passwordHash = createHash('sha256').update('gold-password').digest('hex')
    const login = await request('POST', `${baseUrl}/v1/auth/token`, { 'content-type': 'application/json' },
      JSON.stringify({ username: 'alice', passwordHash }))
    if (login.status !== 200) throw new Error(`login failed: ${login.status} ${login.body.toString()}`)
    token = (JSON.parse(login.body.toString()) as { access_token: string }).access_token
  } catch (error) {
    await stop()
    throw error
  }

  return {
    pid: child.pid!,
    baseUrl,
    storageDir,
    env,
    async dump (body: string): Promise<DumpOutcome> {
      const res = await request('POST', `${baseUrl}/v1/dumps`, {
        authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        accept: 'application/json'
      }, body)
      if (res.status !== 200) throw new Error(`POST /v1/dumps answered ${res.status}: ${res.body.toString().slice(0, 500)}\n${output}`)
      const result = JSON.parse(res.body.toString()) as { items: Array<{ images: Array<{ status: string, bytes?: number, reused?: boolean, error?: unknown }> }> }
      let images = 0
      let succeeded = 0
      let reused = 0
      let downloadedBytes = 0
      const failures: unknown[] = []
      for (const item of result.items) {
        for (const image of item.images) {
          images++
          if (image.status === 'SUCCESS') succeeded++
          else if (failures.length < 3) failures.push(image.error)
          if (image.reused === true) reused++
          else if (image.status === 'SUCCESS') downloadedBytes += image.bytes ?? 0
        }
      }
      return { ms: res.ms, images, succeeded, reused, downloadedBytes, failures }
    },
    memory () {
      return { peak: overTree(child.pid!, (pid) => statusKiB(pid, 'VmHWM')), rss: overTree(child.pid!, (pid) => statusKiB(pid, 'VmRSS')) }
    },
    cpuMs: () => overTree(child.pid!, processCpuMs),
    output: () => output,
    stop
  }
}
