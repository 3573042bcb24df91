import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { sha256Hex } from '../../lib/password.js'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { decodeToken } from '../helpers/jwt.js'

const { username, password } = sampleUsers.gold
const passwordHash = sha256Hex(password)
const quota = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'GET', url: '/v1/quota', headers: { authorization: `Bearer ${token}` } })

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: POST /v1/auth/token`, async (t) => {
    const { app } = await buildTestApp(t, engine)

    t.test('accepts JSON, form-encoded and Basic credentials alike', async (t) => {
      const forms = {
        json: { payload: { username, passwordHash } },
        form: { payload: `username=${username}&passwordHash=${passwordHash}`, headers: { 'content-type': 'application/x-www-form-urlencoded' } },
        basic: { headers: { authorization: `Basic ${Buffer.from(`${username}:${passwordHash}`).toString('base64')}` } }
      }
      for (const [name, request] of Object.entries(forms)) {
        const response = await app.inject({ method: 'POST', url: '/v1/auth/token', ...request })
        t.equal(response.statusCode, 200, name)
        const body = response.json()
        t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'token_type'], `${name}: RFC 6749 fields only`)
        t.equal(body.token_type, 'Bearer')
        t.equal(body.expires_in, 1200)
        t.equal(response.headers['cache-control'], 'no-store')
        t.equal((await quota(app, body.access_token)).statusCode, 200, `${name}: the token authenticates`)
      }
    })

    t.test('an uppercase hex hash is the same password', async (t) => {
      const response = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username, passwordHash: passwordHash.toUpperCase() } })
      t.equal(response.statusCode, 200)
    })

    t.test('a second login makes the first token fail with 401', async (t) => {
      const first = await login(app, username, password)
      t.equal((await quota(app, first)).statusCode, 200)
      const second = await login(app, username, password)
      t.equal((await quota(app, first)).statusCode, 401)
      t.equal((await quota(app, second)).statusCode, 200)
    })

    t.test('wrong password and unknown user get the same 401', async (t) => {
      const wrong = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: sampleUsers.silver.username, passwordHash: sha256Hex('nope') } })
      const unknown = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'mallory', passwordHash: sha256Hex('nope') } })
      t.equal(wrong.statusCode, 401)
      t.equal(unknown.statusCode, 401)
      t.same(wrong.json(), unknown.json())
      t.same(wrong.json(), { statusCode: 401, error: 'Unauthorized', message: 'invalid username or password' })
      const plain = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: sampleUsers.silver.username, passwordHash: sampleUsers.silver.password } })
      t.equal(plain.statusCode, 400, 'a password sent as is (not its SHA-256) is refused as malformed')
    })

    t.test('malformed logins get 400 naming the field', async (t) => {
      const missing = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username } })
      t.equal(missing.statusCode, 400)
      t.match(missing.json().message, /passwordHash/)
      const none = await app.inject({ method: 'POST', url: '/v1/auth/token' })
      t.equal(none.statusCode, 400, 'no body and no Basic header')
    })

    t.test('repeated failures for one client and username are slowed down', async (t) => {
      const attempt = (hash: string) => app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: sampleUsers.bronze.username, passwordHash: hash }, remoteAddress: '192.0.2.7' })
      for (let i = 1; i <= 5; i++) t.equal((await attempt(sha256Hex(`guess ${i}`))).statusCode, 401, `failure ${i}`)
      const blocked = await attempt(sha256Hex(sampleUsers.bronze.password))
      t.equal(blocked.statusCode, 429, 'even the right password waits once the limit is reached')
      t.ok(Number(blocked.headers['retry-after']) > 0, 'Retry-After says how long')
      t.match(blocked.json().message, /too many failed logins/)
      const elsewhere = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: sampleUsers.bronze.username, passwordHash: sha256Hex(sampleUsers.bronze.password) }, remoteAddress: '192.0.2.8' })
      t.equal(elsewhere.statusCode, 200, 'another client is not locked out')
    })
  })

  t.test(`${engine}: TOKEN_EXPIRY changes exp`, async (t) => {
    const { app } = await buildTestApp(t, engine, { TOKEN_EXPIRY: '90' })
    const response = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username, passwordHash } })
    t.equal(response.json().expires_in, 90)
    const { payload } = decodeToken(response.json().access_token)
    t.equal(Number(payload.exp) - Number(payload.iat), 90)
  })
}
