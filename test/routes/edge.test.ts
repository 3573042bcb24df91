/**
 * What each route reads: the formats it parses and how much of a body. Anything else is
 * refused before it is parsed, naming what the route takes.
 *
 * | route | reads | at most |
 * |---|---|---|
 * | `POST /v1/auth/token` | JSON, a form | 4 KiB |
 * | `POST /v1/dumps` | JSON, XML | BODY_LIMIT_BYTES |
 * | GET routes, unknown paths | nothing | — |
 */
import t from 'tap'
import { sha256Hex } from '../../lib/password.js'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'

const { username, password } = sampleUsers.gold
const passwordHash = sha256Hex(password)

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: what each route reads`, async (t) => {
    const { app } = await buildTestApp(t, engine, { BODY_LIMIT_BYTES: String(64 * 1024) })

    t.test('the login route reads JSON and forms of up to 4 KiB', async (t) => {
      const post = (payload: string, contentType: string) =>
        app.inject({ method: 'POST', url: '/v1/auth/token', payload, headers: { 'content-type': contentType, accept: 'application/json' } })
      const padded = (bytes: number): string => {
        const body = JSON.stringify({ username, passwordHash, pad: '' })
        return body.replace('"pad":""', `"pad":"${'x'.repeat(bytes - body.length)}"`)
      }
      t.equal((await post(padded(4096), 'application/json')).statusCode, 200, '4096 bytes of JSON are a login')
      const over = await post(padded(4097), 'application/json')
      t.equal(over.statusCode, 413, '4097 are not')
      t.equal(over.json().message, 'request body is larger than the limit of a login (4096 bytes)')
      t.equal((await post(`username=${username}&passwordHash=${passwordHash}&pad=${'x'.repeat(4000)}`, 'application/x-www-form-urlencoded')).statusCode, 413, 'a form past it either')
      for (const type of ['application/xml', 'text/plain', 'application/octet-stream']) {
        const refused = await post('<items/>', type)
        t.equal(refused.statusCode, 415, type)
        t.equal(refused.json().message, `unsupported media type "${type}": send application/json or application/x-www-form-urlencoded`)
      }
    })

    t.test('the dumps route reads JSON and XML of up to BODY_LIMIT_BYTES', async (t) => {
      // (a login of its own: every login replaces the user's earlier tokens)
      const token = await login(app, username, password)
      const post = (payload: string, contentType: string) => app.inject({
        method: 'POST', url: '/v1/dumps', payload, headers: { authorization: `Bearer ${token}`, 'content-type': contentType }
      })
      const over = await post(JSON.stringify({ items: [{ name: 'x', images: ['x'.repeat(64 * 1024)] }] }), 'application/json')
      t.equal(over.statusCode, 413)
      t.equal(over.json().message, 'request body is larger than BODY_LIMIT_BYTES (65536 bytes)')
      const form = await post('items=1', 'application/x-www-form-urlencoded')
      t.equal(form.statusCode, 415, 'no form: that parser is the login route\'s alone')
      t.equal(form.json().message, 'unsupported media type "application/x-www-form-urlencoded": send application/json, application/xml or text/xml')
    })

    t.test('GET routes and unknown paths parse no body', async (t) => {
      const health = await app.inject({ method: 'GET', url: '/health', payload: '{not json', headers: { 'content-type': 'application/json' } })
      t.equal(health.statusCode, 200, 'a body sent with GET /health is not parsed')
      for (const [method, url] of [['POST', '/nope'], ['POST', '/health'], ['PUT', '/v1/dumps'], ['DELETE', '/v1/quota']] as const) {
        const response = await app.inject({ method, url, payload: '{not json', headers: { 'content-type': 'application/json' } })
        t.equal(response.statusCode, 404, `${method} ${url}: 404, not a JSON error`)
        t.equal(response.json().message, `Route ${method}:${url} not found`)
      }
      const xml = await app.inject({ method: 'POST', url: '/nope', payload: '<not xml', headers: { 'content-type': 'application/xml' } })
      t.equal(xml.statusCode, 404)
      t.match(xml.headers['content-type'], /^application\/xml/, 'in the format the client speaks')
    })
  })
}
