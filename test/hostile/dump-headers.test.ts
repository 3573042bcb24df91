/**
 * Hostile Idempotency-Key and Prefer headers on POST /v1/dumps. A key that is not 1 to 255
 * visible ASCII characters, or that comes twice, is a 400 naming the rule before the body
 * is read, with nothing logged; Prefer never refuses anything: only a well-formed
 * `respond-async` preference (any case, among others) makes the answer a 202, and
 * everything else in it is ignored. The admitted cases point at `ftp://…` (INVALID_URL).
 *
 * Decisions asserted here:
 * - A key is taken as sent: the draft's quoted form `"…"` and every punctuation character
 *   are part of the key.
 * - `respond-async` as a parameter of another preference (`handling=lenient; respond-async`)
 *   is not the preference, and a malformed element is ignored (RFC 7240 §2).
 */
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { enginesUnderTest } from '../helpers/db.js'
import { countRows } from '../helpers/dumps.js'
import {
  Sandbox, assertRefused, assertStillStanding, hostileTarget, listen, rawDump, rawRequest, runCases,
  type Admitted, type HostileCase, type Refused, type Target
} from './harness.js'

const sandbox = await Sandbox.open(t)

const FTP = 'ftp://example.invalid/a.png'
const BODY = JSON.stringify({ items: [{ name: 'Tomato Soup', images: [FTP] }] })
const RULE = /: an Idempotency-Key is 1 to 255 visible ASCII characters \(0x21-0x7E\)$/

const sync: Admitted = { status: 200, images: ['INVALID_URL'] }
const async: Admitted = { status: 202, images: ['INVALID_URL'] }
const badKey = (message: RegExp): Refused => ({ status: 400, message })

/** A case with these headers over the default JSON body. */
const withHeaders = (name: string, headers: Record<string, string | string[]>, expected: Refused | Admitted): HostileCase =>
  ({ name, request: { payload: BODY, headers }, expected })

const keyCases: HostileCase[] = [
  withHeaders('an empty key', { 'idempotency-key': '' }, badKey(/^the Idempotency-Key is empty: /)),
  withHeaders('256 characters', { 'idempotency-key': 'k'.repeat(256) }, badKey(/^the Idempotency-Key is 256 characters long: /)),
  withHeaders('a 16 KB key', { 'idempotency-key': 'k'.repeat(16_000) }, badKey(/^the Idempotency-Key is 16000 characters long: /)),
  withHeaders('a space inside', { 'idempotency-key': 'two words' }, badKey(RULE)),
  withHeaders('a tab inside', { 'idempotency-key': 'a\tb' }, badKey(/"a\\tb" has a character that is not visible ASCII at position 2/)),
  withHeaders('a NUL', { 'idempotency-key': 'a\u0000b' }, badKey(/"a\\u0000b"/)),
  withHeaders('a line break (header injection)', { 'idempotency-key': 'a\r\nX-Injected: 1' }, badKey(/"a\\r\\nX-Injected: 1"/)),
  withHeaders('DEL', { 'idempotency-key': 'a\u007f' }, badKey(RULE)),
  withHeaders('non-ASCII', { 'idempotency-key': 'ключ' }, badKey(/"ключ" has a character that is not visible ASCII at position 1/)),
  withHeaders('an emoji', { 'idempotency-key': 'key-😀' }, badKey(RULE)),
  withHeaders('a Unicode line separator', { 'idempotency-key': 'a\u2028b' }, badKey(/"a\\u2028b"/)),
  withHeaders('two keys', { 'idempotency-key': ['a', 'b'] }, badKey(/^the Idempotency-Key header must be sent once$/)),
  withHeaders('the same key twice', { 'idempotency-key': ['a', 'a'] }, badKey(/^the Idempotency-Key header must be sent once$/)),
  withHeaders('a bad key with respond-async', { 'idempotency-key': '', prefer: 'respond-async' }, badKey(/^the Idempotency-Key is empty: /)),
  withHeaders('a bad key over a bad body', { 'idempotency-key': ' ', 'content-type': 'text/plain' }, badKey(/Idempotency-Key/)),
  withHeaders('every punctuation character', { 'idempotency-key': `!"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}~${randomUUID()}` }, sync),
  withHeaders('the draft\'s quoted form', { 'idempotency-key': `"${randomUUID()}"` }, sync),
  withHeaders('255 characters', { 'idempotency-key': randomUUID() + 'k'.repeat(255 - 36) }, sync),
  withHeaders('one character', { 'idempotency-key': '~' }, sync),
  withHeaders('a key that looks like SQL', { 'idempotency-key': `'),(1,'x');DROP-TABLE-requests;--${randomUUID()}` }, sync),
  withHeaders('a key that looks like a path', { 'idempotency-key': `../../etc/passwd-${randomUUID()}` }, sync)
]

const preferCases: HostileCase[] = [
  withHeaders('respond-async', { prefer: 'respond-async' }, async),
  withHeaders('RESPOND-ASYNC', { prefer: 'RESPOND-ASYNC' }, async),
  withHeaders('respond-async, wait=10', { prefer: 'respond-async, wait=10' }, async),
  withHeaders('wait=10, respond-async', { prefer: 'wait=10,respond-async' }, async),
  withHeaders('two Prefer fields', { prefer: ['handling=strict', 'respond-async'] }, async),
  withHeaders('respond-async with a parameter', { prefer: 'respond-async; foo="a, b; c"' }, async),
  withHeaders('respond-async after a malformed element', { prefer: 'wait="unterminated; x, , respond-async' }, sync),
  withHeaders('respond-async after junk', { prefer: ';;;,,,===, respond-async' }, async),
  withHeaders('handling=lenient', { prefer: 'handling=lenient' }, sync),
  withHeaders('return=minimal', { prefer: 'return=minimal' }, sync),
  withHeaders('respond-async as a parameter', { prefer: 'handling=lenient; respond-async' }, sync),
  withHeaders('respond-async quoted', { prefer: '"respond-async"' }, sync),
  withHeaders('respond async (a space)', { prefer: 'respond async' }, sync),
  withHeaders('respond-asynchronously', { prefer: 'respond-asynchronously' }, sync),
  withHeaders('an empty Prefer', { prefer: '' }, sync),
  withHeaders('8 KB of commas', { prefer: ','.repeat(8192) }, sync),
  withHeaders('8 KB of semicolons after respond-async', { prefer: `respond-async${';'.repeat(8192)}` }, async),
  withHeaders('an unterminated quote of 8 KB', { prefer: `x="${'\\'.repeat(8191)}` }, sync),
  withHeaders('control characters', { prefer: 'respond-async\u0000\u0001' }, sync),
  withHeaders('non-ASCII', { prefer: 'répondre-async, respond-async' }, async),
  withHeaders('__proto__', { prefer: '__proto__=1, constructor, respond-async' }, async)
]

/** What only raw HTTP can send: bytes as they are, fields repeated, a body never sent. */
interface RawCase {
  name: string
  lines: string[]
  /** the body sent, or a Content-Length announced with no body behind it */
  payload: string | { announced: number }
  expected: Refused
}

const rawCases: RawCase[] = [
  { name: 'a key in raw UTF-8 bytes', lines: ['Idempotency-Key: caf\u00c3\u00a9'], payload: BODY, expected: badKey(RULE) },
  { name: 'two key fields', lines: ['Idempotency-Key: a', 'Idempotency-Key: b'], payload: BODY, expected: badKey(/must be sent once/) },
  { name: 'two key fields, spelt differently', lines: ['Idempotency-Key: a', 'IDEMPOTENCY-KEY: a'], payload: BODY, expected: badKey(/must be sent once/) },
  { name: 'a key of spaces (trimmed to empty)', lines: ['Idempotency-Key:    '], payload: BODY, expected: badKey(/is empty/) },
  { name: 'a bad key before a 100 MB body that is never sent', lines: ['Idempotency-Key: a b'], payload: { announced: 100 * 1024 * 1024 }, expected: badKey(RULE) }
]

function runRawCase (t: Test, target: Target, port: number, c: RawCase): void {
  t.test(c.name, async (t) => {
    const rows = await countRows(target.app)
    const lines = [`Authorization: Bearer ${target.token}`, 'Content-Type: application/json', 'Accept: application/json', ...c.lines]
    // the client does not half-close: a server reading a FIN would abort the request in flight
    const response = await rawRequest(port, Buffer.from(typeof c.payload === 'string'
      ? rawDump(lines, c.payload)
      : `POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\n${lines.join('\r\n')}\r\nContent-Length: ${c.payload.announced}\r\n\r\n`, 'latin1'))
    await assertRefused(t, response, c.expected)
    t.equal(await countRows(target.app), rows, 'no requests row')
  })
}

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: hostile Idempotency-Key and Prefer headers`, async (t) => {
    const target = await hostileTarget(t, sandbox, engine, { ALLOW_PRIVATE_NETWORKS: 'false' })

    runCases(t, target, keyCases)
    runCases(t, target, preferCases)

    t.test('over real HTTP', async (t) => {
      const port = await listen(target.app)
      for (const c of rawCases) runRawCase(t, target, port, c)
    })

    t.test('replays of odd keys find their dump; another batch under one is refused', async (t) => {
      for (const key of [`"${randomUUID()}"`, `!#$%&'*+-.^_\`|~${randomUUID()}`, `')OR'1'='1'--${randomUUID()}`]) {
        const headers = { 'idempotency-key': key }
        const first = await target.app.inject({ method: 'POST', url: '/v1/dumps', payload: BODY, headers: { ...target.defaults, ...headers } as Record<string, string> })
        const rows = await countRows(target.app)
        const again = await target.app.inject({ method: 'POST', url: '/v1/dumps', payload: BODY, headers: { ...target.defaults, ...headers } as Record<string, string> })
        t.equal(again.headers['idempotent-replayed'], 'true', `${key}: replayed`)
        t.equal(again.json().requestId, first.json().requestId)
        const other = await target.app.inject({
          method: 'POST',
          url: '/v1/dumps',
          payload: JSON.stringify({ items: [{ name: 'Other', images: [FTP] }] }),
          headers: { ...target.defaults, ...headers } as Record<string, string>
        })
        t.equal(other.statusCode, 422, `${key}: another batch is 422`)
        t.equal(await countRows(target.app), rows, 'neither wrote a row')
      }
    })

    t.test('afterwards', async (t) => {
      await assertStillStanding(t, target, sandbox)
    })
  })
}
