/**
 * A host app with image-dump mounted under /images: a small catalogue API with routes of its
 * own, its own API-key check for them and its own error and not-found answers. Under
 * /images, image-dump brings its own users, tokens, quota, body formats and error answers;
 * everywhere else the host's stay as they are.
 *
 * It imports the package by name, as an app that installed it would: inside this
 * repository, `image-dump` resolves to the package itself (dist/, through the "exports" of
 * package.json), so build it first. See README.md.
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import Fastify, { type FastifyError, type FastifyRequest } from 'fastify'
import imageDump from 'image-dump'
import { loadConfig } from 'image-dump/config'

const apiKey = process.env.SHOP_API_KEY ?? ''
if (apiKey.length < 16) {
  process.stderr.write('shop: set SHOP_API_KEY to an API key of at least 16 characters\n')
  process.exit(78) // EX_CONFIG
}

// image-dump reads its own settings (DATABASE_URL, STORAGE_DIR, USERS_FILE, PLANS…) from the
// same environment; PORT, HOST and LOG_LEVEL serve the host as well.
const config = loadConfig(process.env)
const app = Fastify({ logger: { level: config.logLevel, redact: ['req.headers["x-api-key"]', 'req.headers.authorization'] } })

class HostError extends Error {
  constructor (readonly statusCode: number, message: string) {
    super(message)
  }
}

// The host's answer format. image-dump's routes keep their own error handler; an unknown
// path, under /images too, is the host's 404 (image-dump sets no not-found handler).
app.setErrorHandler((error: FastifyError, request, reply) => {
  const status = error.statusCode !== undefined && error.statusCode >= 400 ? error.statusCode : 500
  if (status >= 500) request.log.error({ err: error }, 'request failed')
  return reply.code(status).send({ error: { status, message: status >= 500 ? 'something went wrong on our side' : error.message } })
})
app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: { status: 404, message: 'no such page' } }))

// Compared as SHA-256 digests: same length whatever was sent, and compared in constant time.
const expectedKey = createHash('sha256').update(apiKey).digest()
async function requireApiKey (request: FastifyRequest): Promise<void> {
  const given = request.headers['x-api-key']
  if (typeof given !== 'string' || !timingSafeEqual(createHash('sha256').update(given).digest(), expectedKey)) {
    throw new HostError(401, 'send the shop API key in the X-Api-Key header')
  }
}

const products = [
  { sku: 'TEA-001', name: 'Green tea, 100 g' },
  { sku: 'TEA-002', name: 'Black tea, 250 g' }
]

app.get('/', async () => ({ shop: 'open', images: '/images' }))

// The host's API: its routes, its credentials (the hook applies inside this scope only).
await app.register(async function api (scope) {
  scope.addHook('onRequest', requireApiKey)
  scope.get('/products', async () => ({ products }))
}, { prefix: '/api' })

// image-dump: POST /images/v1/auth/token, POST /images/v1/dumps, GET /images/v1/quota, …
await app.register(imageDump, { prefix: '/images', config })

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'shutting down')
    // in-flight dumps finish, then image-dump closes its downloads and its database
    app.close().catch((error: unknown) => {
      app.log.error({ err: error }, 'shutdown failed')
      process.exitCode = 1
    })
  })
}
await app.listen({ port: config.port, host: config.host })
