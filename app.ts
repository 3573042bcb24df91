import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './config.js'
import { slowBodyGuard } from './lib/slow-body-guard.js'
import persistence from './plugins/persistence.js'
import users from './plugins/users.js'
import auth from './plugins/auth.js'
import contentNegotiation from './plugins/content-negotiation.js'
import imageFetcher from './plugins/image-fetcher.js'
import quota from './plugins/quota.js'
import dumps from './plugins/dumps.js'
import authRoutes from './routes/auth.js'
import dumpRoutes from './routes/dumps.js'
import healthRoutes from './routes/health.js'
import quotaRoutes from './routes/quota.js'

/**
 * The application: one plugin that registers each concern and the routes. It holds no
 * logic of its own; everything it wires is a plugin usable on its own elsewhere.
 */
async function imageDump (fastify: FastifyInstance, { config }: { config: Config }): Promise<void> {
  // A request still in flight when the server closes would leave its keep-alive connection
  // open until the idle timeout, holding the stop for a minute: those answers close it.
  let closing = false
  fastify.addHook('preClose', async () => { closing = true })
  fastify.addHook('onSend', async (_request, reply) => { if (closing) reply.header('connection', 'close') })

  await fastify.register(persistence, { databaseUrl: config.databaseUrl })
  await fastify.register(users, { usersFile: config.usersFile, plans: Object.keys(config.plans) })
  await fastify.register(contentNegotiation, { maxItems: config.maxItems, maxImages: config.maxImages })
  await fastify.register(auth, { tokenExpirySeconds: config.tokenExpirySeconds })
  await fastify.register(quota, { plans: config.plans })
  await fastify.register(imageFetcher, {
    storageDir: config.storageDir,
    timeoutMs: config.downloadTimeoutMs,
    concurrency: config.downloadConcurrency,
    perHost: config.downloadPerHost,
    maxImageBytes: config.maxImageBytes,
    allowPrivateNetworks: config.allowPrivateNetworks
  })
  await fastify.register(dumps, {
    storageDir: config.storageDir,
    // the embedded database belongs to this one process: whatever it left incomplete is interrupted
    staleAfterMs: config.databaseUrl.startsWith('sqlite:') ? 0 : config.recoveryStaleMs
  })

  await fastify.register(healthRoutes)
  await fastify.register(authRoutes)
  await fastify.register(quotaRoutes)
  await fastify.register(dumpRoutes)
}

// Not encapsulated, so an embedding app (and the tests) can reach the decorators.
const imageDumpPlugin = fp(imageDump, { name: 'image-dump', fastify: '5.x' })
export default imageDumpPlugin

export function serverOptions (config: Config, overrides: FastifyServerOptions = {}): FastifyServerOptions {
  return {
    logger: { level: config.logLevel, redact: ['req.headers.authorization'] },
    bodyLimit: config.bodyLimitBytes,
    // Node's requestTimeout bounds receiving the request only (headers and body), never
    // the wait for a dump's downloads, which their own deadlines bound
    requestTimeout: config.requestTimeoutMs,
    // slow headers (slowloris) are cut after 10 s; timeouts are checked every 2 s, not 30.
    // Fastify hands `http` to http.createServer but does not declare it for HTTP/1.
    ...({ http: { headersTimeout: Math.min(10_000, config.requestTimeoutMs), connectionsCheckingInterval: 2_000 } } as FastifyServerOptions),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ...overrides
  }
}

/** A ready-to-listen Fastify instance running the whole service. */
export async function buildApp (config: Config, overrides: FastifyServerOptions = {}): Promise<FastifyInstance> {
  const fastify = Fastify(serverOptions(config, overrides))
  // Node silently drops header fields past about 1000; keeping them all (the 16 KiB header
  // size still bounds them) lets a duplicated Authorization be seen wherever it is
  fastify.server.maxHeadersCount = 0
  fastify.addHook('onRequest', slowBodyGuard({ minBytesPerSecond: config.bodyMinBytesPerSecond }))
  await fastify.register(imageDumpPlugin, { config })
  await fastify.ready()
  return fastify
}
