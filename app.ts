import Fastify, { type FastifyInstance, type FastifyRequest, type FastifyServerOptions } from 'fastify'
import fp from 'fastify-plugin'
import type { Config } from './config.js'
import { clip } from './lib/excerpt.js'
import { slowBodyGuard } from './lib/slow-body-guard.js'
import persistence from './plugins/persistence.js'
import users from './plugins/users.js'
import auth from './plugins/auth.js'
import contentNegotiation from './plugins/content-negotiation.js'
import { closeIfBodyUnread, errorHandling, useNegotiatedErrors } from './plugins/content-negotiation/error-handler.js'
import { useXmlAnswers } from './plugins/content-negotiation/xml-writer.js'
import imageFetcher from './plugins/image-fetcher.js'
import quota from './plugins/quota.js'
import dumps from './plugins/dumps.js'
import retention from './plugins/retention.js'
import authRoutes from './routes/auth.js'
import dumpRoutes from './routes/dumps.js'
import healthRoutes from './routes/health.js'
import quotaRoutes from './routes/quota.js'
import apiDocs, { describeRoutes } from './plugins/api-docs.js'
import loadShedding, { shedsLoad } from './plugins/load-shedding.js'
import metrics from './plugins/metrics.js'
import metricsRoutes from './routes/metrics.js'
import { packageInfo } from './lib/package-info.js'
import { createObjectStore } from './lib/object-store/create-store.js'
import { createFileStore } from './lib/object-store/file-store.js'
import webPage from './routes/web-page.js'

export interface ImageDumpOptions {
  config: Config
  /**
   * This process is one of the workers of a supervisor (WORKERS > 1, server.ts): the
   * supervisor has migrated the schema, imported users.txt and, on SQLite, released the
   * dumps left unfinished, so none of that runs here; and the database is shared with the
   * other workers, so on SQLite too a dump is taken over only once its heartbeat is stale
   * (RECOVERY_STALE_MS) or when the supervisor names its dead worker [false]
   */
  worker?: boolean
  /**
   * where /metrics gets the whole service's counts instead of this app's: with workers,
   * gathered by their supervisor (lib/cluster-metrics.ts; server.ts sets it up). Unset, each
   * app counts and answers for itself [unset]
   */
  gatherMetrics?: () => Promise<string>
  /** serve the OpenAPI document at /openapi.json and its page at /docs [true] */
  docs?: boolean
  /** serve the Prometheus metrics at /metrics [true] */
  metrics?: boolean
  /** serve the web page (sign in, dumps, gallery) at / [true] */
  page?: boolean
}

/**
 * The routes, in a scope of their own: they alone get the service's body parsers, answer
 * format, error handler and connection handling, whatever scope the service is in.
 */
async function serviceRoutes (scope: FastifyInstance, { config, docs = true, metrics: serveMetrics = true, page = true }: ImageDumpOptions): Promise<void> {
  // A request still in flight when the server closes would leave its keep-alive connection
  // open until the idle timeout, holding the stop for a minute: those answers close it.
  let closing = false
  scope.addHook('preClose', async () => { closing = true })
  scope.addHook('onSend', async (request, reply) => {
    if (closing) reply.header('connection', 'close')
    else closeIfBodyUnread(request, reply)
  })
  // No body is read unless a route below asks for its formats (and sets its own limit).
  scope.removeAllContentTypeParsers()
  useNegotiatedErrors(scope)
  useXmlAnswers(scope)

  scope.imageDumpMetrics.observeRoutes(scope)
  const limits = config.loadShedding
  await scope.register(loadShedding, { limits, onShed: (reason) => scope.imageDumpMetrics.shed(reason) })
  // first: they document the routes registered after them
  describeRoutes(scope, (route) => shedsLoad(limits, route))
  if (docs) await scope.register(apiDocs, { version: packageInfo().version })
  await scope.register(healthRoutes)
  if (serveMetrics) await scope.register(metricsRoutes, { token: config.metricsToken })
  await scope.register(authRoutes)
  await scope.register(quotaRoutes)
  await scope.register(dumpRoutes, { bodyLimit: config.bodyLimitBytes, events: { maxStreamsPerUser: config.eventsMaxStreamsPerUser } })
  if (page) await scope.register(webPage)
}

/**
 * The application: registers each concern and the routes, and holds no logic of its own;
 * everything it wires is a plugin usable on its own elsewhere.
 *
 * As the default export it is an encapsulated plugin, made to be embedded: registered with
 * a `prefix`, as many times as a host likes, it sets no error or not-found handler, parser
 * or hook outside its own routes, and its decorators stay inside it.
 */
async function imageDump (fastify: FastifyInstance, options: ImageDumpOptions): Promise<void> {
  const { config, worker = false } = options
  // one store (STORAGE_URL: a folder, or a bucket) for the fetcher, the image route,
  // resume and retention; closed once everything else is (onClose hooks run last-in
  // first, and this one is added first)
  const store = await createObjectStore(config.storage, { createFileStore })
  fastify.addHook('onClose', async () => { await store.close() })
  await fastify.register(persistence, { databaseUrl: config.databaseUrl, migrate: !worker })
  await fastify.register(users, { usersFile: worker ? undefined : config.usersFile, plans: Object.keys(config.plans) })
  await fastify.register(contentNegotiation, { maxItems: config.maxItems, maxImages: config.maxImages })
  await fastify.register(auth, { tokenExpirySeconds: config.tokenExpirySeconds })
  await fastify.register(quota, { plans: config.plans })
  await fastify.register(imageFetcher, {
    store,
    timeoutMs: config.downloadTimeoutMs,
    concurrency: config.downloadConcurrency,
    perHost: config.downloadPerHost,
    memoryBytes: config.downloadMemoryBytes,
    maxImageBytes: config.maxImageBytes,
    allowPrivateNetworks: config.allowPrivateNetworks
  })
  await fastify.register(dumps, {
    store,
    // the embedded database belongs to this one process: whatever it left incomplete is
    // resumed at start; shared by workers, it is recovered as a shared MySQL database is
    staleAfterMs: config.databaseUrl.startsWith('sqlite:') && !worker ? 0 : config.recoveryStaleMs,
    events: { pollMs: config.eventsPollMs }
  })
  if (config.retentionDays !== null) await fastify.register(retention, { retentionDays: config.retentionDays, store })
  await fastify.register(metrics, { gather: options.gatherMetrics })
  // not `options` itself: a host's `prefix` in it is already this scope's
  await fastify.register(serviceRoutes, { config, docs: options.docs, metrics: options.metrics, page: options.page })
}

export default imageDump
/** App-wide error handling, for a host that wants the service's errors and 404s (see buildApp). */
export { errorHandling }
/** The body-rate guard buildApp puts on its server, for a host that wants it on its own (an onRequest hook). */
export { slowBodyGuard }

/**
 * The same application, not encapsulated: its decorators (`db`, `dumps`, `auth`, …) land on
 * the instance it is registered in, as buildApp (and the tests) use them. Fastify gives a
 * plugin like this no prefix of its own, so it refuses one: mount the default export instead.
 */
export const imageDumpWithDecorators = fp(async function imageDumpShared (fastify: FastifyInstance, options: ImageDumpOptions & { prefix?: string }) {
  if (options.prefix !== undefined) throw new TypeError('image-dump: imageDumpWithDecorators takes no prefix; register the default export under a prefix')
  await imageDump(fastify, options)
}, { name: 'image-dump', fastify: '5.x' })

/** Fastify's view of a request in the log, with what the client chose (URL, Host) cut short. */
function requestLogView (request: FastifyRequest): Record<string, unknown> {
  return {
    method: request.method,
    url: clip(request.url, 200),
    host: clip(request.host, 100),
    remoteAddress: request.ip,
    remotePort: request.socket?.remotePort
  }
}

/** The server's options; logger options given in `overrides` (a level, a stream) go over the service's. */
export function serverOptions (config: Config, overrides: FastifyServerOptions = {}): FastifyServerOptions {
  const logger = { level: config.logLevel, redact: ['req.headers.authorization'], serializers: { req: requestLogView } }
  const { logger: loggerOverride, ...rest } = overrides
  return {
    logger: typeof loggerOverride === 'object' ? { ...logger, ...loggerOverride } : loggerOverride ?? logger,
    // Node's requestTimeout bounds receiving the request only (headers and body), never
    // the wait for a dump's downloads, which their own deadlines bound
    requestTimeout: config.requestTimeoutMs,
    // slow headers (slowloris) are cut after 10 s; timeouts are checked every 2 s, not 30.
    // Fastify hands `http` to http.createServer but does not declare it for HTTP/1.
    ...({ http: { headersTimeout: Math.min(10_000, config.requestTimeoutMs), connectionsCheckingInterval: 2_000 } } as FastifyServerOptions),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ...rest
  }
}

/**
 * A ready-to-listen Fastify instance running the whole service: the application, plus what
 * only the owner of a server may choose, app-wide error handling (errors and unknown routes
 * answered like the service's own).
 */
export async function buildApp (config: Config, overrides: FastifyServerOptions = {}, service: Pick<ImageDumpOptions, 'worker' | 'gatherMetrics'> = {}): Promise<FastifyInstance> {
  const fastify = Fastify(serverOptions(config, overrides))
  // Node silently drops header fields past about 1000; keeping them all (the 16 KiB header
  // size still bounds them) lets a duplicated Authorization be seen wherever it is
  fastify.server.maxHeadersCount = 0
  fastify.addHook('onRequest', slowBodyGuard({ minBytesPerSecond: config.bodyMinBytesPerSecond }))
  // The root serves no route of its own, so it reads no body: a body sent to an unknown
  // path is answered 404 without being parsed, and its connection closed unread.
  fastify.removeAllContentTypeParsers()
  await fastify.register(errorHandling)
  await fastify.register(imageDumpWithDecorators, { config, ...service })
  await fastify.ready()
  return fastify
}
