/**
 * Hostile headers and credentials on POST /v1/dumps: content types and charsets, missing,
 * malformed, forged, expired, superseded and orphaned tokens, and what only raw HTTP can
 * send (duplicated fields, oversized heads, ambiguous framing). Refusals are a 4xx saying
 * why, with nothing logged; the few admitted cases point at `ftp://…` (INVALID_URL).
 *
 * Decisions asserted here:
 * - Only HS256 with the user's current secret verifies. The token's own `kid`, `jku`, `jwk`
 *   or `x5u` never choose a key: with a foreign key they fail, with the right one they
 *   change nothing, and nothing they point at is fetched.
 * - The auth scheme is case-insensitive (`bearer` works, RFC 9110 §11.1).
 * - Authorization must appear once: two fields are a 401 even when one is valid, since a
 *   proxy in front may read the other one.
 * - Request content codings are not decoded: a gzip body is bytes that are not UTF-8 JSON.
 */
import t, { type Test } from 'tap'
import { createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import { gzipSync } from 'node:zlib'
import { sha256Hex } from '../../lib/password.js'
import { login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { countRows } from '../helpers/dumps.js'
import { decodeToken, forgeToken } from '../helpers/jwt.js'
import { startOrigin } from '../helpers/origin.js'
import {
  Sandbox, assertRefused, assertStillStanding, hostileTarget, listen, rawDump, rawExchange, runCase, runCases,
  type Admitted, type HostileCase, type Refused, type Target
} from './harness.js'

const sandbox = await Sandbox.open(t)
// what jku / x5u headers point at: it must never be asked for anything
const origin = await startOrigin()
t.teardown(() => origin.close())

const FTP = 'ftp://example.invalid/a.png'
const BODY = JSON.stringify({ items: [{ name: 'Tomato Soup', images: [FTP] }] })
const XML_BODY = `<items><item><name>Tomato Soup</name><images><url>${FTP}</url></images></item></items>`

const refused = (status: Refused['status'], message: RegExp): Refused => ({ status, message })
const unauthorized = (message: RegExp): Refused => ({ status: 401, message, headers: { 'www-authenticate': /^Bearer$/ } })
// one answer for every token that is not genuinely ours, whatever is wrong with it and
// whether or not its user exists: different words would tell which user ids exist
const forged = unauthorized(/^Authorization token is invalid$/)
const admitted: Admitted = { status: 200, images: ['INVALID_URL'] }
const unsupported = (type: string): Refused => refused(415, new RegExp(`^unsupported media type "${type.replace(/[+.]/g, '\\$&')}": send application/json, application/xml or text/xml$`))

const b64url = (value: string | Buffer): string => Buffer.from(value).toString('base64url')

/** What forged tokens are made of: the gold user's current token, secret and id. */
interface Keys {
  token: string
  secret: Buffer
  sub: string
  /** bob's user id: a real user whose secret is not alice's */
  otherSub: string
  now: number
  rsa: { privateKey: KeyObject, publicKey: KeyObject }
  ec: { privateKey: KeyObject, publicKey: KeyObject }
}

/** A JWS signed with an asymmetric key (forgeToken only does HMAC). */
function signAsymmetric (header: Record<string, unknown>, payload: Record<string, unknown>, key: KeyObject, dsaEncoding?: 'ieee-p1363'): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
  const signature = sign('sha256', Buffer.from(input), dsaEncoding === undefined ? key : { key, dsaEncoding })
  return `${input}.${b64url(signature)}`
}

/** A JWS whose header names any algorithm, signed with HMAC-SHA256 (an algorithm-confusion attempt). */
function hmacUnder (header: Record<string, unknown>, payload: Record<string, unknown>, key: Buffer): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`
}

const bearer = (token: string): { authorization: string } => ({ authorization: `Bearer ${token}` })

function tokenCases (k: Keys): HostileCase[] {
  const claims = { sub: k.sub, iat: k.now, exp: k.now + 600 }
  const hs256 = (header: Record<string, unknown>, payload: Record<string, unknown> = claims, key: Buffer | string = k.secret): string =>
    forgeToken({ typ: 'JWT', ...header, alg: header.alg ?? 'HS256' }, payload, key)
  const [h, p, s] = k.token.split('.') as [string, string, string]
  const attackerKey = Buffer.alloc(32, 7)
  const jwk = { kty: 'oct', k: attackerKey.toString('base64url') }
  return [
    // missing and malformed
    { name: 'no Authorization', request: { payload: BODY, headers: { authorization: undefined } }, expected: unauthorized(/^send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token$/) },
    { name: 'an empty Authorization', request: { payload: BODY, headers: { authorization: '' } }, expected: unauthorized(/^send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token$/) },
    { name: '"Bearer" alone', request: { payload: BODY, headers: { authorization: 'Bearer' } }, expected: unauthorized(/^send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token$/) },
    { name: '"Bearer " with nothing after it', request: { payload: BODY, headers: { authorization: 'Bearer ' } }, expected: unauthorized(/^Format is Authorization: Bearer \[token\]$/) },
    { name: 'Bearer garbage', request: { payload: BODY, headers: bearer('garbage') }, expected: forged },
    { name: 'Bearer a.b.c', request: { payload: BODY, headers: bearer('a.b.c') }, expected: forged },
    { name: 'a token with a fourth segment', request: { payload: BODY, headers: bearer(`${k.token}.x`) }, expected: forged },
    { name: 'a token followed by a word', request: { payload: BODY, headers: { authorization: `Bearer ${k.token} please` } }, expected: unauthorized(/^Format is Authorization: Bearer \[token\]$/) },
    { name: 'two spaces after Bearer', request: { payload: BODY, headers: { authorization: `Bearer  ${k.token}` } }, expected: unauthorized(/^Format is Authorization: Bearer \[token\]$/) },
    { name: 'a 100 KB Authorization (through inject, which has no header limit)', request: { payload: BODY, headers: bearer('a'.repeat(100 * 1024)) }, expected: forged },
    { name: 'the signature cut off', request: { payload: BODY, headers: bearer(`${h}.${p}.`) }, expected: forged },
    { name: 'a header that is not JSON', request: { payload: BODY, headers: bearer(`${b64url('not json')}.${p}.${s}`) }, expected: forged },
    { name: 'a payload that is not JSON', request: { payload: BODY, headers: bearer(`${h}.${b64url('not json')}.${s}`) }, expected: forged },
    { name: 'a Basic header on /v1/dumps', request: { payload: BODY, headers: { authorization: `Basic ${Buffer.from(`${sampleUsers.gold.username}:${sha256Hex(sampleUsers.gold.password)}`).toString('base64')}` } }, expected: unauthorized(/^send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token$/) },
    { name: 'a Digest header', request: { payload: BODY, headers: { authorization: 'Digest username="alice", realm="x", nonce="1", uri="/v1/dumps", response="0"' } }, expected: unauthorized(/^send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token$/) },
    { name: 'the scheme in lowercase ("bearer") is the same scheme', request: { payload: BODY, headers: { authorization: `bearer ${k.token}` } }, expected: admitted },
    { name: 'two Authorization fields, the valid one first', request: { payload: BODY, headers: { authorization: [`Bearer ${k.token}`, 'Bearer garbage'] } }, expected: unauthorized(/^the Authorization header must be sent once$/) },
    { name: 'the same valid Authorization twice', request: { payload: BODY, headers: { authorization: [`Bearer ${k.token}`, `Bearer ${k.token}`] } }, expected: unauthorized(/^the Authorization header must be sent once$/) },

    // algorithms
    { name: 'alg none', request: { payload: BODY, headers: bearer(forgeToken({ alg: 'none', typ: 'JWT' }, claims)) }, expected: forged },
    { name: 'alg None', request: { payload: BODY, headers: bearer(forgeToken({ alg: 'None', typ: 'JWT' }, claims)) }, expected: forged },
    { name: 'alg NONE', request: { payload: BODY, headers: bearer(forgeToken({ alg: 'NONE', typ: 'JWT' }, claims)) }, expected: forged },
    { name: 'alg none carrying a valid HS256 signature', request: { payload: BODY, headers: bearer(`${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.${s}`) }, expected: forged },
    { name: 'HS384 with the user\'s own secret', request: { payload: BODY, headers: bearer(hs256({ alg: 'HS384' })) }, expected: forged },
    { name: 'HS512 with the user\'s own secret', request: { payload: BODY, headers: bearer(hs256({ alg: 'HS512' })) }, expected: forged },
    {
      name: 'RS256 header, HMAC signature with the secret (algorithm confusion)',
      request: { payload: BODY, headers: bearer(hmacUnder({ alg: 'RS256', typ: 'JWT' }, claims, k.secret)) },
      expected: forged
    },
    { name: 'RS256 signed by a key of our own, shipped as jwk', request: { payload: BODY, headers: bearer(signAsymmetric({ alg: 'RS256', typ: 'JWT', jwk: k.rsa.publicKey.export({ format: 'jwk' }) }, claims, k.rsa.privateKey)) }, expected: forged },
    { name: 'ES256 signed by a key of our own', request: { payload: BODY, headers: bearer(signAsymmetric({ alg: 'ES256', typ: 'JWT' }, claims, k.ec.privateKey, 'ieee-p1363')) }, expected: forged },

    // key selection: kid / jku / jwk / x5u never choose the key
    { name: 'kid "../../../dev/null" with an empty key', request: { payload: BODY, headers: bearer(hs256({ kid: '../../../dev/null' }, claims, '')) }, expected: forged },
    { name: 'kid naming another user, signed with a key of our own', request: { payload: BODY, headers: bearer(hs256({ kid: k.otherSub }, claims, attackerKey)) }, expected: forged },
    { name: 'jwk embedding our own symmetric key', request: { payload: BODY, headers: bearer(hs256({ jwk }, claims, attackerKey)) }, expected: forged },
    { name: 'jku pointing at our key set', request: { payload: BODY, headers: bearer(hs256({ jku: origin.url('/jwks.json') }, claims, attackerKey)) }, expected: forged },
    { name: 'x5u pointing at our certificate', request: { payload: BODY, headers: bearer(hs256({ x5u: origin.url('/cert.pem') }, claims, attackerKey)) }, expected: forged },
    { name: 'kid, jku, jwk and x5u beside the right secret change nothing', request: { payload: BODY, headers: bearer(hs256({ kid: 'x', jku: origin.url('/jwks.json'), jwk, x5u: origin.url('/cert.pem') })) }, expected: admitted },

    // claims
    { name: 'expired', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, iat: k.now - 3600, exp: k.now - 60 })) }, expected: unauthorized(/^Authorization token expired$/) },
    { name: 'not valid yet (nbf in an hour)', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, nbf: k.now + 3600 })) }, expected: unauthorized(/^The token will be active at /) },
    { name: 'exp as a string', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, exp: String(k.now + 600) })) }, expected: unauthorized(/^The exp claim must be a number\.$/) },
    { name: 'another user\'s id, signed with this user\'s secret', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: k.otherSub })) }, expected: forged },
    { name: 'sub as a number', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: Number(k.sub) })) }, expected: forged },
    { name: 'sub with a leading zero', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: `0${k.sub}` })) }, expected: forged },
    { name: 'sub "1 OR 1=1"', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: '1 OR 1=1' })) }, expected: forged },
    { name: 'sub of no user', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: '99999' })) }, expected: forged },
    { name: 'no sub', request: { payload: BODY, headers: bearer(hs256({}, { iat: claims.iat, exp: claims.exp })) }, expected: forged },
    { name: 'sub "__proto__"', request: { payload: BODY, headers: bearer(hs256({}, { ...claims, sub: '__proto__' })) }, expected: forged }
  ]
}

const contentCases: HostileCase[] = [
  { name: 'no Content-Type', request: { payload: BODY, headers: { 'content-type': undefined } }, expected: refused(415, /^a request body needs a Content-Type: application\/json, application\/xml or text\/xml$/) },
  { name: 'an empty Content-Type', request: { payload: BODY, headers: { 'content-type': '' } }, expected: refused(415, /^a request body needs a Content-Type/) },
  { name: 'no body and no Content-Type', request: { headers: { 'content-type': undefined } }, expected: refused(400, /^request body is required \(application\/json, application\/xml or text\/xml\)$/) },
  { name: 'text/plain', request: { payload: BODY, headers: { 'content-type': 'text/plain' } }, expected: unsupported('text/plain') },
  { name: 'a form', request: { payload: 'items=1', headers: { 'content-type': 'application/x-www-form-urlencoded' } }, expected: unsupported('application/x-www-form-urlencoded') },
  { name: 'multipart', request: { payload: '--x\r\n\r\n--x--', headers: { 'content-type': 'multipart/form-data; boundary=x' } }, expected: unsupported('multipart/form-data') },
  { name: 'application/octet-stream', request: { payload: BODY, headers: { 'content-type': 'application/octet-stream' } }, expected: unsupported('application/octet-stream') },
  { name: 'application/jsonx (a longer name is another type)', request: { payload: BODY, headers: { 'content-type': 'application/jsonx' } }, expected: unsupported('application/jsonx') },
  { name: 'application/vnd.api+json', request: { payload: BODY, headers: { 'content-type': 'application/vnd.api+json' } }, expected: unsupported('application/vnd.api+json') },
  { name: 'image/svg+xml', request: { payload: XML_BODY, headers: { 'content-type': 'image/svg+xml' } }, expected: unsupported('image/svg+xml') },
  { name: 'charset=utf-16', request: { payload: Buffer.from(BODY, 'utf16le'), headers: { 'content-type': 'application/json; charset=utf-16' } }, expected: refused(415, /^unsupported charset "utf-16": send the body in UTF-8$/) },
  { name: 'charset=windows-1252 on XML', request: { payload: XML_BODY, headers: { 'content-type': 'text/xml; charset=windows-1252' } }, expected: refused(415, /^unsupported charset "windows-1252"/) },
  { name: 'an empty charset', request: { payload: BODY, headers: { 'content-type': 'application/json; charset=' } }, expected: refused(415, /^unsupported charset ""/) },
  { name: 'charset=unicode-1-1-utf-8 (an alias nobody sends)', request: { payload: BODY, headers: { 'content-type': 'application/json; charset=unicode-1-1-utf-8' } }, expected: refused(415, /unsupported charset "unicode-1-1-utf-8"/) },
  { name: 'charset="UTF-8", quoted and in capitals', request: { payload: BODY, headers: { 'content-type': 'application/json; charset="UTF-8"' } }, expected: admitted },
  { name: 'APPLICATION/JSON in capitals', request: { payload: BODY, headers: { 'content-type': 'APPLICATION/JSON' } }, expected: admitted },
  { name: 'text/xml; charset=us-ascii', request: { payload: XML_BODY, headers: { 'content-type': 'text/xml; charset=us-ascii' } }, expected: admitted },
  { name: 'a JSON Content-Type without a body', request: {}, expected: refused(400, /^request body is empty$/) },
  { name: 'a gzip body labelled Content-Encoding: gzip is not decoded', request: { payload: gzipSync(BODY), headers: { 'content-encoding': 'gzip' } }, expected: refused(400, /^request body is not valid UTF-8$/) }
]

interface RawCase { name: string, bytes: (token: string) => string, expected: Refused }

const clientError = refused(400, /^Client Error$/)
const rawCases: RawCase[] = [
  { name: 'two Authorization fields, the valid one first', bytes: (token) => rawDump([`Authorization: Bearer ${token}`, 'Authorization: Bearer garbage', 'Content-Type: application/json'], BODY), expected: unauthorized(/^the Authorization header must be sent once$/) },
  { name: 'two Authorization fields, the valid one last', bytes: (token) => rawDump(['Authorization: Bearer garbage', `Authorization: Bearer ${token}`, 'Content-Type: application/json'], BODY), expected: unauthorized(/^the Authorization header must be sent once$/) },
  { name: 'Authorization as "authorization" and "AUTHORIZATION"', bytes: (token) => rawDump([`authorization: Bearer ${token}`, `AUTHORIZATION: Bearer ${token}`, 'Content-Type: application/json'], BODY), expected: unauthorized(/^the Authorization header must be sent once$/) },
  // Node keeps a limited number of header fields and drops the rest without a word: a second
  // Authorization pushed past that count must not go unseen
  ...[1030, 2500].map((fields): RawCase => ({
    name: `${fields} header fields with a second Authorization last`,
    bytes: (token) => rawDump([`Authorization: Bearer ${token}`, ...Array.from({ length: fields - 3 }, (_, i) => `p${i.toString(36)}:1`), 'Authorization: Bearer garbage', 'Content-Type: application/json'], BODY),
    expected: unauthorized(/^(the Authorization header must be sent once|too many header fields: the Authorization header cannot be checked)$/)
  })),
  { name: 'a 100 KB Authorization', bytes: () => rawDump([`Authorization: Bearer ${'a'.repeat(100 * 1024)}`, 'Content-Type: application/json'], BODY), expected: refused(431, /^Exceeded maximum allowed HTTP header size$/) },
  { name: 'Content-Length and Transfer-Encoding together (smuggling)', bytes: (token) => `POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n${BODY.length.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`, expected: clientError },
  { name: 'two different Content-Lengths', bytes: (token) => `POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${BODY.length}\r\nContent-Length: 4\r\n\r\n${BODY}`, expected: clientError },
  { name: 'a chunk size that is not hex', bytes: (token) => `POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${BODY}\r\n0\r\n\r\n`, expected: clientError },
  { name: 'a NUL byte in a header value', bytes: (token) => rawDump([`Authorization: Bearer ${token}\0`, 'Content-Type: application/json'], BODY), expected: clientError },
  { name: 'a folded (obs-fold) Authorization', bytes: (token) => rawDump(['Authorization: Bearer', ` ${token}`, 'Content-Type: application/json'], BODY), expected: clientError }
]

function runRawCase (t: Test, target: Target, port: number, c: RawCase): void {
  t.test(`raw HTTP: ${c.name}`, async (t) => {
    const before = await countRows(target.app)
    const response = await rawExchange(port, c.bytes(target.token))
    await assertRefused(t, response, c.expected)
    t.equal(await countRows(target.app), before, 'no requests row for refused input')
  })
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: hostile headers and credentials`, async (t) => {
    const target = await hostileTarget(t, sandbox, engine, { ALLOW_PRIVATE_NETWORKS: 'false' })
    const bob = decodeToken(await login(target.app, sampleUsers.silver.username, sampleUsers.silver.password)).payload.sub as string
    const { sub } = decodeToken(target.token).payload as { sub: string }
    const row = await target.app.persistence.db.selectFrom('tokens').select('user_secret').where('userid', '=', Number(sub)).executeTakeFirstOrThrow()
    const keys: Keys = {
      token: target.token,
      secret: Buffer.from(row.user_secret),
      sub,
      otherSub: bob,
      now: Math.floor(Date.now() / 1000),
      rsa: generateKeyPairSync('rsa', { modulusLength: 2048 }),
      ec: generateKeyPairSync('ec', { namedCurve: 'P-256' })
    }

    runCases(t, target, contentCases)
    runCases(t, target, tokenCases(keys))

    t.test('over real HTTP', async (t) => {
      const port = await listen(target.app)
      for (const c of rawCases) runRawCase(t, target, port, c)
    })

    // state-changing cases last, on users the cases above do not use
    t.test('a token from before a rotation', async (t) => {
      const first = await login(target.app, sampleUsers.bronze.username, sampleUsers.bronze.password)
      const second = await login(target.app, sampleUsers.bronze.username, sampleUsers.bronze.password)
      runCase(t, target, { name: 'the first token after a second login', request: { payload: BODY, headers: bearer(first) }, expected: forged })
      runCase(t, target, { name: 'the second token', request: { payload: BODY, headers: bearer(second) }, expected: admitted })
    })

    t.test('a token whose secret was emptied, or removed', async (t) => {
      const token = await login(target.app, sampleUsers.bronze.username, sampleUsers.bronze.password)
      const { sub } = decodeToken(token).payload as { sub: string }
      await target.app.persistence.db.updateTable('tokens').set({ user_secret: Buffer.alloc(0) }).where('userid', '=', Number(sub)).execute()
      const claims = { sub, iat: keys.now, exp: keys.now + 600 }
      runCase(t, target, { name: 'signed with the empty key', request: { payload: BODY, headers: bearer(forgeToken({ alg: 'HS256', typ: 'JWT' }, claims, '')) }, expected: forged })
      runCase(t, target, { name: 'the token issued before', request: { payload: BODY, headers: bearer(token) }, expected: forged })
      t.test('once the row is gone', async (t) => {
        await target.app.persistence.db.deleteFrom('tokens').where('userid', '=', Number(sub)).execute()
        runCase(t, target, { name: 'the token issued before', request: { payload: BODY, headers: bearer(token) }, expected: forged })
      })
    })

    t.test('a token for a deleted user', async (t) => {
      const token = await login(target.app, sampleUsers.silver.username, sampleUsers.silver.password)
      await target.app.persistence.db.deleteFrom('users').where('username', '=', sampleUsers.silver.username).execute()
      runCase(t, target, { name: 'the deleted user\'s valid-looking token', request: { payload: BODY, headers: bearer(token) }, expected: forged })
    })

    t.test('afterwards', async (t) => {
      await assertStillStanding(t, target, sandbox)
      t.equal(origin.requests, 0, 'no jku / x5u URL was fetched')
    })
  })
}
