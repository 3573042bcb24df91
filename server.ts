import Fastify from 'fastify'
import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import persistence from './plugins/persistence.js'
import users from './plugins/users.js'

// The process entry: read the configuration, start, and stop gracefully.

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
    const app = Fastify({ logger: { level: config.logLevel } })
    await app.register(persistence, { databaseUrl: config.databaseUrl })
    await app.register(users, { usersFile: config.usersFile, plans: Object.keys(config.plans) })
    await app.close()
    return
  }

  const app = await buildApp(config)
  // SIGINT/SIGTERM: stop accepting, let in-flight requests finish, close the download agent
  // and the database, exit 0. A dump still running after SHUTDOWN_GRACE_MS is abandoned (exit
  // 1) with the outcomes it recorded; it is resumed at the next start or by another
  // instance's sweep. An uncaught error closes the same way after logging it.
  closeWithGrace({
    delay: config.shutdownGraceMs,
    logger: { error: (message: unknown, ...rest: unknown[]) => app.log.error({ detail: rest }, String(message)) }
  }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'uncaught error: shutting down')
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests')
    await app.close()
  })
  await app.listen({ port: config.port, host: config.host })
}

main().catch((error: unknown) => {
  process.stderr.write(`image-dump: failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
