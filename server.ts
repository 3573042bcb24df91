import Fastify from 'fastify'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './config.js'
import persistence from './plugins/persistence.js'
import users from './plugins/users.js'

// The process entry: read the configuration, start, and stop gracefully. Closing the
// app lets in-flight requests finish, then closes the download agent and the database.

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
  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    app.log.info({ signal }, 'shutting down: finishing in-flight requests')
    app.close().then(() => process.exit(0), (error: unknown) => {
      app.log.error({ err: error }, 'error while shutting down')
      process.exit(1)
    })
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
  await app.listen({ port: config.port, host: config.host })
}

main().catch((error: unknown) => {
  process.stderr.write(`image-dump: failed to start: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
})
