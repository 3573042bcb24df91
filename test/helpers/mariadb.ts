/**
 * A MariaDB server of a test's own: a fresh data directory, a free port, the `mariadbd` of
 * this machine. Fault tests kill and restart it; the shared server on 3306, which other
 * test files use in parallel, is never touched.
 *
 * ```ts
 * const server = await startPrivateMariaDb()
 * if ('unavailable' in server) return t.skip(server.unavailable)
 * t.teardown(() => server.close())
 * const url = await server.createDatabase('image_dump')
 * await server.kill()   // SIGKILL, resolves once the process has exited
 * await server.start()  // same data directory and port; resolves once it takes connections
 * ```
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { access, constants, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { createConnection } from 'mysql2/promise'
import { freePort } from './server-process.js'
import { run } from './command.js'

export interface PrivateMariaDb {
  readonly port: number
  /** `mysql://root@127.0.0.1:<port>/<database>` */
  url (database: string): string
  /** creates a database and returns its URL */
  createDatabase (name: string): Promise<string>
  /** kills the server (SIGKILL by default: no clean shutdown) and resolves once it has exited */
  kill (signal?: NodeJS.Signals): Promise<void>
  /** starts the server again on the same data directory and port; resolves once a connection succeeds */
  start (): Promise<void>
  /** kills the server and removes its data directory */
  close (): Promise<void>
}

async function executable (name: string, extraDirs: string[]): Promise<string | undefined> {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), ...extraDirs].filter((d) => d !== '')
  for (const dir of dirs) {
    const file = join(dir, name)
    try {
      await access(file, constants.X_OK)
      return file
    } catch {}
  }
  return undefined
}

async function firstExecutable (names: string[]): Promise<string | undefined> {
  const sbin = ['/usr/sbin', '/usr/local/sbin', '/usr/local/mysql/bin', '/usr/local/mariadb/bin']
  for (const name of names) {
    const found = await executable(name, sbin)
    if (found !== undefined) return found
  }
  return undefined
}

// Small and fast: the tests hold a few rows; durability against a killed process (not a
// killed machine) only needs the OS cache, so commits need not wait for an fsync.
const SERVER_TUNING = [
  '--innodb-buffer-pool-size=16M',
  '--innodb-log-file-size=4M',
  '--innodb-flush-log-at-trx-commit=2',
  '--skip-log-bin',
  '--skip-name-resolve',
  '--max-connections=200'
]

/** Installs and starts a private server, or says why it cannot (never throws for that). */
export async function startPrivateMariaDb (): Promise<PrivateMariaDb | { unavailable: string }> {
  const installDb = await firstExecutable(['mariadb-install-db', 'mysql_install_db'])
  const daemon = await firstExecutable(['mariadbd', 'mysqld'])
  if (installDb === undefined || daemon === undefined) {
    return { unavailable: `no MariaDB server binaries on this machine (need mariadb-install-db or mysql_install_db, and mariadbd or mysqld; found ${installDb ?? 'neither installer'}, ${daemon ?? 'no server'})` }
  }
  const dir = await mkdtemp(join(tmpdir(), 'image-dump-mariadb-'))
  const datadir = join(dir, 'data')
  // mariadbd refuses to run as root unless told to
  const asUser = process.getuid?.() === 0 ? ['--user=root'] : []
  const install = await run(installDb, [
    '--no-defaults', `--datadir=${datadir}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...asUser, '--innodb-log-file-size=4M'
  ])
  if (install.code !== 0) {
    await rm(dir, { recursive: true, force: true })
    return { unavailable: `${installDb} failed (exit ${String(install.code)}): ${install.output.trim().split('\n').slice(-5).join(' | ')}` }
  }

  const port = await freePort()
  let child: ChildProcess | undefined
  let exited: Promise<void> = Promise.resolve()

  async function start (): Promise<void> {
    const proc = spawn(daemon!, [
      '--no-defaults', `--datadir=${datadir}`, `--port=${port}`, `--socket=${join(dir, 'mariadb.sock')}`,
      '--bind-address=127.0.0.1', `--pid-file=${join(dir, 'mariadb.pid')}`, ...asUser, ...SERVER_TUNING
    ], { stdio: ['ignore', 'ignore', 'pipe'] })
    child = proc
    exited = new Promise((resolve) => proc.once('exit', () => resolve()))
    let log = ''
    const lines = createInterface({ input: proc.stderr! })
    await new Promise<void>((resolve, reject) => {
      lines.on('line', (line) => {
        log += `${line}\n`
        if (/ready for connections/.test(line)) resolve()
      })
      void exited.then(() => reject(new Error(`mariadbd exited before it was ready:\n${log}`)))
    })
    // "ready" is its own word for it; a real connection is ours. It normally works at once.
    const deadline = Date.now() + 20_000
    for (;;) {
      try {
        const conn = await createConnection({ host: '127.0.0.1', port, user: 'root' })
        await conn.end()
        return
      } catch (error) {
        if (Date.now() > deadline) throw error
        await sleep(50)
      }
    }
  }

  async function kill (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill(signal)
    await exited
  }

  try {
    await start()
  } catch (error) {
    await kill()
    await rm(dir, { recursive: true, force: true })
    return { unavailable: `mariadbd could not be started: ${error instanceof Error ? error.message.split('\n').slice(0, 12).join(' | ') : String(error)}` }
  }

  const url = (database: string): string => `mysql://root@127.0.0.1:${port}/${database}`
  return {
    port,
    url,
    async createDatabase (name) {
      const conn = await createConnection({ host: '127.0.0.1', port, user: 'root' })
      await conn.query(`CREATE DATABASE \`${name}\``)
      await conn.end()
      return url(name)
    },
    kill,
    start,
    async close () {
      await kill()
      await rm(dir, { recursive: true, force: true })
    }
  }
}
