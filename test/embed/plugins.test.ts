/**
 * Every exported plugin registered on its own into a busy host app: one that already has
 * @fastify/rate-limit (global, in memory), @fastify/jwt with its own secret, @fastify/auth,
 * @fastify/sensible, its own error handler, JSON parser and routes.
 *
 * The host keeps working exactly as before, and the plugins keep their guarantees: the
 * quota is exact and never fails open (it does not run on the host's rate-limit store),
 * tokens are checked with the per-user secret (not the host's), content negotiation adds no
 * parser or hook of its own, and the fetcher and the dumps plugin store and record.
 */
import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import fastifyJwt from '@fastify/jwt'
import fastifyAuth from '@fastify/auth'
import fastifySensible from '@fastify/sensible'
import rateLimit from '@fastify/rate-limit'
import persistence from '../../plugins/persistence.js'
import users from '../../plugins/users.js'
import auth from '../../plugins/auth.js'
import quota from '../../plugins/quota.js'
import contentNegotiation from '../../plugins/content-negotiation.js'
import imageFetcher from '../../plugins/image-fetcher.js'
import dumps from '../../plugins/dumps.js'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startOrigin } from '../helpers/origin.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { issueToken, sampleUsers } from '../helpers/users.js'

const usersFile = new URL('../../users.txt', import.meta.url).pathname
const HOST_SECRET = 'the host app signs its own tokens with this'

declare module '@fastify/jwt' {
  interface FastifyJWT {
    user: { sub: string, iat: number, exp: number } | { name: string }
  }
}

/** A host app of the usual kind, before any image-dump plugin is added. */
async function busyHost (): Promise<FastifyInstance> {
  const host = Fastify()
  await host.register(rateLimit, { global: true, max: 1000, timeWindow: 60_000 })
  await host.register(fastifyJwt, { secret: HOST_SECRET })
  await host.register(fastifyAuth)
  await host.register(fastifySensible)
  host.setErrorHandler((error: Error & { statusCode?: number }, _request, reply) => {
    void reply.code(error.statusCode ?? 500).send({ hostError: true, message: error.message })
  })
  host.decorate('hostCheck', async (request: { jwtVerify: () => Promise<unknown> }) => { await request.jwtVerify() })
  host.get('/host/login', async (_request, reply) => ({ token: await reply.jwtSign({ name: 'host-user' }) }))
  host.get('/host/me', { onRequest: host.auth([(host as unknown as { hostCheck: never }).hostCheck]) }, async (request) => request.user)
  host.get('/host/teapot', async () => { throw host.httpErrors.imateapot('host error') })
  host.post('/host/echo', async (request) => ({ echoed: request.body }))
  return host
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: auth and quota inside a busy host`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const host = await busyHost()
    await host.register(persistence, { databaseUrl: database.url })
    await host.register(users, { usersFile, plans: ['gold', 'silver', 'bronze'] })
    await host.register(auth, { tokenExpirySeconds: 1200 })
    await host.register(quota, { plans: { gold: 2, silver: 2, bronze: 2 } })
    await host.register(contentNegotiation, { maxItems: 10, maxImages: 10 })
    const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-embed-plugins-'))
    t.teardown(() => rm(storageDir, { recursive: true, force: true }))
    await host.register(imageFetcher, { storageDir, timeoutMs: 5000, concurrency: 4, perHost: 4, maxImageBytes: 1e6, allowPrivateNetworks: true })
    await host.register(dumps, { storageDir })
    host.post('/dumps', {
      onRequest: host.imageDumpAuth.authenticate,
      preHandler: host.quota.enforce
    }, async (request) => ({ requestId: request.admittedRequestId, user: request.principal.username }))
    await host.ready()
    t.teardown(() => host.close())

    t.test("the host's own JWT, @fastify/auth, sensible and error handler work as before", async (t) => {
      const { token } = (await host.inject({ method: 'GET', url: '/host/login' })).json()
      const me = await host.inject({ method: 'GET', url: '/host/me', headers: { authorization: `Bearer ${token}` } })
      t.equal(me.statusCode, 200)
      t.equal(me.json().name, 'host-user', "request.user is still the host's")
      const teapot = await host.inject({ method: 'GET', url: '/host/teapot' })
      t.equal(teapot.statusCode, 418)
      t.same(teapot.json(), { hostError: true, message: 'host error' }, "the host's error format")
      t.ok(me.headers['x-ratelimit-limit'], "the host's global rate limit still applies to its routes")
    })

    t.test('content negotiation leaves the host its JSON parser and its error format', async (t) => {
      const echo = await host.inject({ method: 'POST', url: '/host/echo', payload: '{"a":[[[1]]]}', headers: { 'content-type': 'application/json' } })
      t.same(echo.json(), { echoed: { a: [[[1]]] } }, "Fastify's own JSON parser, as the host had it")
      const proto = await host.inject({ method: 'POST', url: '/host/echo', payload: '{"__proto__":1}', headers: { 'content-type': 'application/json' } })
      t.same(proto.json().hostError, true, "and its own refusal of __proto__, in the host's format")
      const xml = await host.inject({ method: 'POST', url: '/host/echo', payload: '<a/>', headers: { 'content-type': 'application/xml', accept: 'application/xml' } })
      t.equal(xml.statusCode, 415)
      t.same(xml.json().hostError, true, 'no XML parser, no XML errors: the host\'s own 415')
    })

    t.test('the fetcher and the dumps plugin store and record inside the host', async (t) => {
      const origin = await startOrigin()
      t.teardown(() => origin.close())
      const outcome = await host.imageFetcher.fetchImage(origin.url('/png/7'), { dir: 'embedded', name: 'seven' })
      t.match(outcome, { status: 'SUCCESS', contentType: 'image/png' })
      const user = (await host.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
      const requestId = await (async () => {
        const row = await host.persistence.db.insertInto('requests').values({ userid: user.userid, dataformat: 'json', data: null, status: 0 }).executeTakeFirstOrThrow()
        return Number(row.insertId)
      })()
      const result = await host.dumps.process(user, requestId, { items: [{ name: 'Embedded', images: [origin.url('/png/8')] }] }, 'json')
      t.equal(result.status, 'SUCCESS')
      t.equal((await host.dumps.find(user.userid, requestId))?.complete, true, 'recorded')
      t.ok(await host.dumps.image(user.userid, requestId, 1), 'and stored')
    })

    t.test('a token signed with the host secret is not ours', async (t) => {
      const { token } = (await host.inject({ method: 'GET', url: '/host/login' })).json()
      const response = await host.inject({ method: 'POST', url: '/dumps', headers: { authorization: `Bearer ${token}` } })
      t.equal(response.statusCode, 401)
    })

    t.test('the quota is exact and logged, not run on the host store', async (t) => {
      const token = (await issueToken(host, sampleUsers.bronze.username, sha256Hex(sampleUsers.bronze.password)))!.access_token
      const statuses: number[] = []
      for (let i = 0; i < 3; i++) {
        statuses.push((await host.inject({ method: 'POST', url: '/dumps', headers: { authorization: `Bearer ${token}` } })).statusCode)
      }
      t.same(statuses, [200, 200, 429], 'limit 2: two admitted, the third refused')
      const carol = (await host.imageDumpUsers.findByUsername(sampleUsers.bronze.username))!
      const rows = await host.persistence.db.selectFrom('requests').select('id').where('userid', '=', carol.userid).execute()
      t.equal(rows.length, 2, 'one row per admitted dump')
    })
  })
}
