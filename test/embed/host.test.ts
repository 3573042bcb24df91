/**
 * The whole service embedded in a busy host app, under a prefix, once and twice. The host
 * has its own error handler, not-found handler, JSON parser (which records what it parsed),
 * hooks, routes, @fastify/sensible, @fastify/rate-limit (global, in memory), @fastify/jwt
 * with its own secret, @fastify/auth and decorators named `db`, `users` and `authenticate`. Its behaviour is measured the same way with and
 * without the service in it and must not differ; the service's routes work under their
 * prefix with their own parsers, answer formats, errors, tokens and quota.
 *
 * SQLite only: embedding does not depend on the engine.
 */
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance, type InjectOptions } from 'fastify'
import sensible from '@fastify/sensible'
import fastifyAuth from '@fastify/auth'
import fastifyJwt from '@fastify/jwt'
import rateLimit from '@fastify/rate-limit'
import imageDump, { imageDumpWithDecorators } from '../../app.js'
import { loadConfig, type Config } from '../../config.js'
import { sha256Hex } from '../../lib/password.js'
import { buildDist } from '../helpers/build.js'
import { createTestDatabase } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { sampleUsers } from '../helpers/users.js'

// the web page's script is compiled by the build (web/*.ts to dist/web/); its route is checked here
await buildDist()
const origin = await startOrigin()
t.teardown(() => origin.close())

const HOST_SECRET = 'the host signs its own tokens with this'
/** A token of the host's own, the same for every host built here (no iat). */
const hostToken = await (async () => {
  const signer = Fastify()
  await signer.register(fastifyJwt, { secret: HOST_SECRET, sign: { noTimestamp: true } })
  await signer.ready()
  const token = signer.jwt.sign({ name: 'host-user' })
  await signer.close()
  return token
})()

/** A configuration of its own (database, storage folder) for one copy of the service. */
async function serviceConfig (): Promise<Config> {
  const database = await createTestDatabase('sqlite')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-embed-'))
  t.teardown(async () => {
    await database.drop()
    await rm(storageDir, { recursive: true, force: true })
  })
  return loadConfig({
    DATABASE_URL: database.url,
    STORAGE_DIR: storageDir,
    USERS_FILE: new URL('../../users.txt', import.meta.url).pathname,
    LOG_LEVEL: 'silent',
    ALLOW_PRIVATE_NETWORKS: 'true'
  })
}

interface Host {
  app: FastifyInstance
  /** URLs the host's JSON parser was called for */
  parsed: string[]
  /** URLs the host's onRequest hook saw */
  seen: string[]
}

/** The host app, with the service under each of `prefixes`. */
async function buildHost (prefixes: string[]): Promise<Host> {
  const app = Fastify()
  const parsed: string[] = []
  const seen: string[] = []
  await app.register(sensible)
  await app.register(rateLimit, { global: true, max: 10_000, timeWindow: 60_000 })
  await app.register(fastifyJwt, { secret: HOST_SECRET })
  await app.register(fastifyAuth)
  // names hosts commonly give their own things: the service must not need them
  app.decorate('db', { host: 'database' })
  app.decorate('users', { host: 'users' })
  app.decorate('authenticate', async () => {})
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    parsed.push(request.url)
    try {
      done(null, JSON.parse(body as string))
    } catch (error) {
      done(Object.assign(error as Error, { statusCode: 400 }), undefined)
    }
  })
  app.addHook('onRequest', async (request) => { seen.push(request.url) })

  for (const prefix of prefixes) await app.register(imageDump, { prefix, config: await serviceConfig() })

  // set after the service is in: it must have left both for the host to set
  app.setErrorHandler((error, _request, reply) => {
    const { statusCode, message } = error as { statusCode?: number, message: string }
    void reply.code(statusCode ?? 500).send({ host: 'error handler', message })
  })
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ host: 'not found handler', url: request.url })
  })
  app.get('/ping', async () => ({ pong: true }))
  app.get('/whoami', { onRequest: app.auth([async (request) => { await request.jwtVerify() }]) }, async (request) => ({ user: request.user }))
  app.post('/echo', async (request) => ({ echoed: request.body }))
  app.get('/teapot', async (_request, reply) => reply.imateapot('short and stout'))
  app.get('/boom', async () => { throw new Error('host boom') })
  app.get('/forbidden', async () => { throw app.httpErrors.forbidden('not for you') })
  await app.ready()
  t.teardown(() => app.close())
  return { app, parsed, seen }
}

/** What the host answers to its own requests, as comparable values. */
const hostRequests: Array<[string, InjectOptions]> = [
  ['a route', { method: 'GET', url: '/ping', headers: { accept: 'application/xml' } }],
  ['its own JWT, through @fastify/auth', { method: 'GET', url: '/whoami', headers: { authorization: `Bearer ${hostToken}` } }],
  ['a JWT it did not sign', { method: 'GET', url: '/whoami', headers: { authorization: 'Bearer a.b.c' } }],
  ['JSON through its own parser', { method: 'POST', url: '/echo', payload: '{"a":[1,{"b":"c"}],"__proto__":1}', headers: { 'content-type': 'application/json' } }],
  ['malformed JSON', { method: 'POST', url: '/echo', payload: '{"a":', headers: { 'content-type': 'application/json', accept: 'application/xml' } }],
  ['deep JSON (its parser, its limits)', { method: 'POST', url: '/echo', payload: `${'['.repeat(100)}${']'.repeat(100)}`, headers: { 'content-type': 'application/json' } }],
  ['text/plain', { method: 'POST', url: '/echo', payload: 'hello', headers: { 'content-type': 'text/plain' } }],
  ['XML, which it does not read', { method: 'POST', url: '/echo', payload: '<a/>', headers: { 'content-type': 'application/xml', accept: 'application/xml' } }],
  ['an error, asked for in XML', { method: 'GET', url: '/boom', headers: { accept: 'application/xml' } }],
  ['@fastify/sensible errors', { method: 'GET', url: '/forbidden', headers: { accept: 'application/xml' } }],
  ['@fastify/sensible replies', { method: 'GET', url: '/teapot' }],
  ['an unknown path', { method: 'GET', url: '/nope', headers: { accept: 'application/xml' } }],
  ['an unknown path with a body', { method: 'POST', url: '/nope', payload: '{"x":1}', headers: { 'content-type': 'application/json' } }],
  ['an unknown path under a prefix of the service', { method: 'GET', url: '/a/nope', headers: { accept: 'application/xml' } }]
]

async function answers (host: Host): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {}
  for (const [name, request] of hostRequests) {
    const response = await host.app.inject(request)
    out[name] = {
      status: response.statusCode,
      type: response.headers['content-type'],
      vary: response.headers.vary,
      connection: response.headers.connection,
      rateLimited: response.headers['x-ratelimit-limit'],
      body: response.body
    }
  }
  out['parsed'] = [...host.parsed]
  out['seen'] = [...host.seen]
  return out
}

async function login (host: Host, prefix: string): Promise<string> {
  const response = await host.app.inject({
    method: 'POST',
    url: `${prefix}/v1/auth/token`,
    payload: { username: sampleUsers.gold.username, passwordHash: sha256Hex(sampleUsers.gold.password) }
  })
  if (response.statusCode !== 200) throw new Error(`login under ${prefix}: ${response.statusCode} ${response.body}`)
  return response.json().access_token
}

t.test('the host behaves exactly as before, with the service under one prefix or two', async (t) => {
  const bare = await answers(await buildHost([]))
  t.same(await answers(await buildHost(['/a'])), bare, 'one copy under /a')
  t.same(await answers(await buildHost(['/a', '/b'])), bare, 'two copies, under /a and /b')
})

t.test("the service's routes work under their prefixes", async (t) => {
  const host = await buildHost(['/a', '/b'])
  for (const prefix of ['/a', '/b']) {
    t.test(prefix, async (t) => {
      const token = await login(host, prefix)
      const health = await host.app.inject({ method: 'GET', url: `${prefix}/health`, headers: { accept: 'application/xml' } })
      t.equal(health.statusCode, 200)
      t.equal(health.body, '<?xml version="1.0" encoding="UTF-8"?><health><status>ok</status><database>reachable</database></health>', 'answers in XML when asked')

      const url = origin.url(`/png/${prefix === '/a' ? 1 : 2}`)
      const dump = await host.app.inject({
        method: 'POST',
        url: `${prefix}/v1/dumps`,
        payload: `<items><item><name>Embedded</name><images><url>${url}</url></images></item></items>`,
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/xml', accept: 'application/json' }
      })
      t.equal(dump.statusCode, 200, `an XML dump, read by the service's own parser: ${dump.body.slice(0, 300)}`)
      t.match(dump.json(), { status: 'SUCCESS', items: [{ name: 'Embedded', images: [{ url, status: 'SUCCESS' }] }] })

      const bad = await host.app.inject({
        method: 'POST',
        url: `${prefix}/v1/dumps`,
        payload: '{"items":[{"images":["u"]}]}',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/xml' }
      })
      t.equal(bad.statusCode, 400)
      t.equal(bad.body, '<?xml version="1.0" encoding="UTF-8"?><error><statusCode>400</statusCode><error>Bad Request</error><message>items[0].name: is required</message></error>',
        "the service's errors, in the client's format")

      const later = await host.app.inject({
        method: 'POST',
        url: `${prefix}/v1/dumps`,
        payload: JSON.stringify({ items: [{ name: 'Later', images: [url] }] }),
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', prefer: 'respond-async' }
      })
      t.equal(later.statusCode, 202, 'an asynchronous dump')
      t.equal(later.headers.location, `${prefix}/v1/dumps/${later.json().requestId}`, 'is found under the prefix')
      const followed = await host.app.inject({ method: 'GET', url: later.headers.location!, headers: { authorization: `Bearer ${token}` } })
      t.equal(followed.statusCode, 200, 'where Location says')
    })
  }
  t.test('each copy has its own users and secrets', async (t) => {
    const tokenOfA = await login(host, '/a')
    const quota = await host.app.inject({ method: 'GET', url: '/b/v1/quota', headers: { authorization: `Bearer ${tokenOfA}` } })
    t.equal(quota.statusCode, 401, "a token of /a is not one of /b's")
  })
  t.test("a token of the host is not the service's, and the service's is not the host's", async (t) => {
    const quota = await host.app.inject({ method: 'GET', url: '/a/v1/quota', headers: { authorization: `Bearer ${hostToken}` } })
    t.equal(quota.statusCode, 401)
    const whoami = await host.app.inject({ method: 'GET', url: '/whoami', headers: { authorization: `Bearer ${await login(host, '/a')}` } })
    t.equal(whoami.statusCode, 401)
  })
  t.test('the quota is counted in the service, whatever the host limits', async (t) => {
    const token = await login(host, '/b')
    const before = await host.app.inject({ method: 'GET', url: '/b/v1/quota', headers: { authorization: `Bearer ${token}` } })
    const dump = await host.app.inject({
      method: 'POST',
      url: '/b/v1/dumps',
      payload: { items: [{ name: 'Counted', images: [origin.url('/png/3')] }] },
      headers: { authorization: `Bearer ${token}` }
    })
    t.equal(dump.statusCode, 200)
    t.equal(dump.headers['ratelimit-remaining'], String(before.json().remaining - 1), "the service's quota header")
    const after = await host.app.inject({ method: 'GET', url: '/b/v1/quota', headers: { authorization: `Bearer ${token}` } })
    t.equal(after.json().used, before.json().used + 1, 'one more dump in the window')
  })
  t.test("the host's JSON parser never read a body of the service", async (t) => {
    t.same(host.parsed.filter((url) => url.startsWith('/a/') || url.startsWith('/b/')), [])
  })
  t.test('the web page is under each prefix, and its Content-Security-Policy on its routes only', async (t) => {
    for (const prefix of ['/a', '/b']) {
      const page = await host.app.inject({ method: 'GET', url: `${prefix}/` })
      t.equal(page.statusCode, 200, `${prefix}/: the page`)
      t.match(page.headers['content-type'], /^text\/html/)
      t.match(page.headers['content-security-policy'], /default-src 'none'/, 'with its policy')
      const script = await host.app.inject({ method: 'GET', url: `${prefix}/web/app.js` })
      t.same([script.statusCode, typeof script.headers['content-security-policy']], [200, 'string'], 'its script too')
    }
    const others = await Promise.all(['/a/health', '/b/v1/quota', '/ping', '/nope'].map(async (url) => (await host.app.inject({ method: 'GET', url })).headers))
    t.same(others.map((headers) => [headers['content-security-policy'], headers['x-frame-options']]), others.map(() => [undefined, undefined]),
      "neither the service's API nor the host's routes get the page's headers")
  })
})

t.test('the variant that shares its decorators takes no prefix (Fastify would give it none)', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await t.rejects(async () => { await app.register(imageDumpWithDecorators, { prefix: '/a', config: await serviceConfig() }) },
    /imageDumpWithDecorators takes no prefix; register the default export under a prefix/)
})
