import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))

export interface ServerProcess {
  child: ChildProcess
  baseUrl: string
  /** log lines (pino JSON) the process printed */
  logs: string[]
  /** resolves with the exit code (or signal) once the process has ended */
  exited: Promise<number | NodeJS.Signals | null>
  /**
   * resolves with the first log line (already printed or still to come) that matches;
   * rejects if the process exits first. Event-driven: use it instead of sleeping.
   */
  waitForLog: (pattern: RegExp) => Promise<string>
  stop: (signal?: NodeJS.Signals) => Promise<number | NodeJS.Signals | null>
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/**
 * The real service in a process of its own, started from the TypeScript sources exactly as
 * `npm run dev` would (without the watcher). Resolves once it logs that it is listening;
 * rejects with its output if it exits first.
 */
export async function startServerProcess (env: Record<string, string>): Promise<ServerProcess> {
  return await startNodeProcess(['--import', 'tsx', 'server.ts'], { cwd: root, env })
}

export interface NodeProcessOptions {
  /** working directory [the repository] */
  cwd?: string
  /** variables over `baseEnv`; PORT is a free port unless given, HOST 127.0.0.1, LOG_LEVEL info, WORKERS 1 */
  env: Record<string, string>
  /** the environment the variables go over [this process's] */
  baseEnv?: NodeJS.ProcessEnv
}

/**
 * Any Fastify server in a node process of its own (`node ...args`), such as an app that
 * embeds the service: it must listen on HOST and PORT and log as Fastify does (pino JSON on
 * stdout). Resolves once it logs that it is listening; rejects with its output if it exits first.
 */
export async function startNodeProcess (args: string[], options: NodeProcessOptions): Promise<ServerProcess> {
  const { env } = options
  const port = env.PORT ?? String(await freePort())
  const child = spawn(process.execPath, args, {
    cwd: options.cwd ?? root,
    // one process, as `npm run dev` runs it, unless a test asks for workers
    env: { ...(options.baseEnv ?? process.env), HOST: '127.0.0.1', LOG_LEVEL: 'info', WORKERS: '1', ...env, PORT: port },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  const logs: string[] = []
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)))
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const lines = createInterface({ input: child.stdout! })
  let logWaiters: Array<{ pattern: RegExp, resolve: (line: string) => void }> = []
  lines.on('line', (line) => {
    logs.push(line)
    const matched = logWaiters.filter((w) => w.pattern.test(line))
    logWaiters = logWaiters.filter((w) => !matched.includes(w))
    for (const w of matched) w.resolve(line)
  })
  await new Promise<void>((resolve, reject) => {
    lines.on('line', (line) => {
      if (line.includes('Server listening at')) resolve()
    })
    exited.then((code) => reject(new Error(`server exited (${String(code)}) before listening:\n${stderr}\n${logs.join('\n')}`)), reject)
  })
  return {
    child,
    baseUrl: `http://127.0.0.1:${port}`,
    logs,
    exited,
    waitForLog: (pattern) => {
      const seen = logs.find((line) => pattern.test(line))
      if (seen !== undefined) return Promise.resolve(seen)
      return new Promise<string>((resolve, reject) => {
        logWaiters.push({ pattern, resolve })
        exited.then((code) => reject(new Error(`server exited (${String(code)}) before logging ${String(pattern)}`)), reject)
      })
    },
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return await exited
    }
  }
}

/** A line of a service's JSON log (pino). */
export interface LogLine { pid: number, msg: string, [field: string]: unknown }

/** The JSON lines a service process has logged so far. */
export function parsed (server: ServerProcess): LogLine[] {
  return server.logs.flatMap((line) => {
    try {
      return [JSON.parse(line) as LogLine]
    } catch {
      return []
    }
  })
}

/** The pid of each worker a supervisor started, by cluster worker id, from its log. */
export function workerPids (server: ServerProcess): Map<number, number> {
  return new Map(parsed(server).filter((l) => l.msg === 'worker started').map((l) => [Number(l.worker), Number(l.workerPid)]))
}
