import cluster from 'node:cluster'
import { pino } from 'pino'
import { ConfigError, loadConfig, type Config } from './config.js'
import { gatherWorkersMetrics, joinWorkersMetrics } from './lib/cluster-metrics.js'
import { onSupervisorMessages, superviseWorkers } from './lib/worker-supervisor.js'

// The process entry: read the configuration, start, and stop gracefully. With WORKERS > 1
// this first process supervises the workers (lib/worker-supervisor.ts), each of which runs
// this file again and serves; with WORKERS=1 it serves itself.

/** What `--prepare-workers` does: run once, in a process of its own, before the workers start. */
const PREPARE = '--prepare-workers'
/**
 * The mark of a worker of this service's supervisor, rather than of another cluster's (a
 * process manager's cluster mode runs the service as a single process in each of its workers).
 */
const WORKER = '--worker'

/**
 * Migrates the schema and makes the users true to users.txt: what every single process
 * does as it starts, done once for all the workers, so that no two run it at once. Before
 * workers on SQLite, also releases the dumps the service left unfinished when it last
 * stopped: the file is this service's alone and no worker runs yet, so every incomplete
 * dump is left over, and the first worker to start resumes it.
 */
async function prepareDatabase (config: Config, options: { releaseUnfinished: boolean }): Promise<void> {
  // loaded here and in serve() only: the supervisor, which does neither, stays small
  const [{ default: Fastify }, { default: persistence }, { default: users }, { createRequests }] = await Promise.all([
    import('fastify'), import('./plugins/persistence.js'), import('./plugins/users.js'), import('./db/requests.js')])
  const app = Fastify({ logger: { level: config.logLevel } })
  await app.register(persistence, { databaseUrl: config.databaseUrl })
  await app.register(users, { usersFile: config.usersFile, plans: Object.keys(config.plans) })
  await app.ready()
  const { db, engine } = app.persistence
  if (options.releaseUnfinished && engine === 'sqlite') {
    const released = await createRequests(db, engine).releaseUnfinished()
    if (released > 0) app.log.warn({ released }, 'dumps left unfinished at the last stop are resumed by the workers')
  }
  await app.close()
}

/** Serves, in this process: the single process (WORKERS=1), or one worker of several. */
async function serve (config: Config): Promise<void> {
  const worker = cluster.isWorker && process.argv.includes(WORKER)
  // first, so that the supervisor can ask this worker for its counts while it starts
  const workerMetrics = worker ? joinWorkersMetrics() : undefined
  const [{ buildApp }, { default: closeWithGrace }] = await Promise.all([import('./app.js'), import('close-with-grace')])
  // a scrape of any worker answers with every worker's counts
  const app = await buildApp(config, {}, { worker, gatherMetrics: workerMetrics?.gather })
  if (workerMetrics !== undefined) workerMetrics.share(app.imageDumpMetrics.registry)
  if (worker) {
    onSupervisorMessages((instance) => {
      app.dumps.resumeDumpsOf(instance).then((resumed) => {
        if (resumed > 0) app.log.warn({ resumed, of: instance }, 'resuming the dumps of a worker that died')
      }, (error: unknown) => { app.log.error({ err: error, of: instance }, 'resuming the dumps of a worker that died failed') })
    })
  }
  // SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close the download agent
  // and the database, exit 0. A dump still running after SHUTDOWN_GRACE_MS is abandoned (exit
  // 1) with the outcomes it recorded; it is resumed at the next start or by another
  // instance's sweep. An uncaught error closes the same way after logging it.
  // A worker stops when its supervisor tells it (SIGTERM); the Ctrl-C or hang-up a terminal
  // sends to every process of the group reaches the supervisor too, which passes it on
  // once, so the worker leaves those to it rather than count a second signal.
  const terminalSignals = ['SIGINT', 'SIGHUP'] as const
  if (worker) for (const signal of terminalSignals) process.on(signal, () => {})
  closeWithGrace({
    delay: config.shutdownGraceMs,
    ...(worker ? { skip: [...terminalSignals] } : {}),
    logger: { error: (message: unknown, ...rest: unknown[]) => app.log.error({ detail: rest }, String(message)) }
  }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'uncaught error: shutting down')
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests')
    await app.close()
  })
  await app.listen({ port: config.port, host: config.host })
}

async function main (): Promise<void> {
  let config: Config
  try {
    config = loadConfig()
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`image-dump: configuration error: ${error.message}\n`)
      process.exit(78) // EX_CONFIG
    }
    throw error
  }

  if (process.argv.includes('--import-users')) {
    // The explicit form of what every start does: migrate, upsert users.txt, and stop.
    return await prepareDatabase(config, { releaseUnfinished: false })
  }
  if (cluster.isWorker && process.argv.includes(PREPARE)) {
    await prepareDatabase(config, { releaseUnfinished: true })
    // the channel to the supervisor is all that keeps this process alive now
    cluster.worker!.disconnect()
    return
  }
  if (cluster.isPrimary && config.workers > 1) {
    const log = pino({ level: config.logLevel })
    gatherWorkersMetrics({ log })
    const args = process.argv.slice(2)
    process.exitCode = await superviseWorkers({ workers: config.workers, shutdownGraceMs: config.shutdownGraceMs, log, prepareArgs: [...args, PREPARE], workerArgs: [...args, WORKER] })
    return
  }
  await serve(config)
}

main().catch((error: unknown) => {
  process.stderr.write(`image-dump: failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
