/**
 * Properties of POST /v1/dumps over generated input (fast-check; a failure prints its seed
 * and the shrunk counter-example):
 *
 * (a) a valid batch — random names full of Unicode and XML-special characters, optional
 *     fields, 1–5 items of 1–4 images at origin routes with a known outcome — is answered
 *     identically through XML, canonical JSON and the literal JSON mapping, and the outcome
 *     of every image is the one its route determines;
 * (b) an invalid body — arbitrary strings and bytes, random JSON values and documents with
 *     hostile keys, random XML-ish trees, mutated valid XML and JSON — never gets a 5xx;
 *     arbitrary strings, bytes and JSON values are refused and write no `requests` row; the
 *     generators built from a batch's own names (hostile-key JSON, XML-ish trees, mutants)
 *     may now and then produce a valid batch, so for them the property is that a request is
 *     logged (one row) exactly when it is admitted (200).
 *
 * numRuns stay modest: the whole hostile suite runs in well under a minute on two cores.
 * Quota-hungry, so the gold plan is raised (PLANS=gold=100000).
 */
import t from 'tap'
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { batchBody, countRows, type Format, type TestItem } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { Sandbox, assertStillStanding, errorBody, hostileTarget, imageOutcomes, send, type Target } from './harness.js'

const sandbox = await Sandbox.open(t)
const origin = await startOrigin()
t.teardown(() => origin.close())

// ---------------------------------------------------------------------------
// (a) valid batches
// ---------------------------------------------------------------------------

const NOT_XML_TEXT = /[^\t\n\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u
const special = fc.constantFrom('<', '>', '&', '"', "'", ']]>', '&amp;', '&#38;', '<![CDATA[', '<!--', '-->', '<!DOCTYPE', '__proto__', '\t', '\n', ' ', '\u00a0', '\u2028', '東京', '🍅', 'é', 'e\u0301')
const char = fc.oneof(special, fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }), fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }))
// what XML 1.0 can carry (no \r either: XML parsers normalise line ends, JSON does not)
const text = (minLength: number): fc.Arbitrary<string> => fc.string({ unit: char, minLength, maxLength: 12 }).filter((s) => !NOT_XML_TEXT.test(s))
const name = text(1).filter((s) => s.trim() !== '')
const optional = fc.option(text(0), { nil: undefined })

/** an origin route and the outcome it always has */
const image = fc.oneof(
  fc.nat(999).map((n) => ({ path: `/png/${n}`, outcome: 'SUCCESS' })),
  fc.nat(99).map((n) => ({ path: `/png/${n}?a=1&b=<${n}>`, outcome: 'SUCCESS' })),
  fc.constant({ path: '/status/404', outcome: 'HTTP 404' }),
  fc.constant({ path: '/lying-png', outcome: 'NOT_AN_IMAGE' }),
  fc.constant({ path: '/svg', outcome: 'NOT_AN_IMAGE' })
)
const item = fc.record({
  name,
  manufacturer: optional,
  brand: optional,
  category: optional,
  images: fc.array(image, { minLength: 1, maxLength: 4 })
})
const batch = fc.array(item, { minLength: 1, maxLength: 5 })

type GeneratedItem = typeof item extends fc.Arbitrary<infer T> ? T : never

function toTestItems (items: readonly GeneratedItem[]): TestItem[] {
  return items.map((i) => ({
    name: i.name,
    ...(i.manufacturer === undefined ? {} : { manufacturer: i.manufacturer }),
    ...(i.brand === undefined ? {} : { brand: i.brand }),
    ...(i.category === undefined ? {} : { category: i.category }),
    images: i.images.map((img) => origin.url(img.path))
  }))
}

/** statuses an answer should have, from the routes alone */
function expectedAnswer (items: readonly GeneratedItem[]): { status: string, items: unknown[], outcomes: string[] } {
  const rule = (outcomes: string[]): string => {
    const ok = outcomes.filter((o) => o === 'SUCCESS').length
    return ok === outcomes.length ? 'SUCCESS' : ok === 0 ? 'FAILURE' : 'PARTIAL'
  }
  const outcomes = items.flatMap((i) => i.images.map((img) => img.outcome))
  return {
    status: rule(outcomes),
    outcomes,
    items: items.map((i, index) => ({
      itemId: index + 1,
      name: i.name.trim(),
      ...(i.manufacturer === undefined ? {} : { manufacturer: i.manufacturer.trim() }),
      ...(i.brand === undefined ? {} : { brand: i.brand.trim() }),
      ...(i.category === undefined ? {} : { category: i.category.trim() }),
      processStatus: rule(i.images.map((img) => img.outcome))
    }))
  }
}

interface Answer { status: string, items: Array<Record<string, unknown> & { images: Array<{ imageId: number, url: string, status: string, error?: { type: string, code?: string, httpStatus?: number } }> }> }

/** everything of an answer but what differs between two requests (ids, locations) */
function comparable (answer: Answer): unknown {
  return {
    status: answer.status,
    items: answer.items.map(({ images, ...fields }) => ({
      ...fields,
      images: images.map((i) => ({ imageId: i.imageId, url: i.url, status: i.status, error: i.error?.code ?? i.error?.httpStatus }))
    }))
  }
}

t.test('(a) a valid batch gets the same answer through XML, canonical JSON and the literal mapping', async (t) => {
  const target = await hostileTarget(t, sandbox, 'sqlite', { PLANS: 'gold=100000,silver=50,bronze=25', DOWNLOAD_TIMEOUT_MS: '5000' })
  let runs = 0
  await fc.assert(fc.asyncProperty(batch, async (generated) => {
    runs++
    const items = toTestItems(generated)
    const expected = expectedAnswer(generated)
    const answers: Record<string, Answer> = {}
    for (const format of ['xml', 'json', 'literal'] as Format[]) {
      const { payload, contentType } = batchBody(format, items)
      const response = await send(target, { payload, headers: { 'content-type': contentType } })
      assert.equal(response.statusCode, 200, `${format}: ${response.body.slice(0, 300)}`)
      const answer = JSON.parse(response.body) as Answer
      assert.equal(answer.status, expected.status, `${format}: overall status`)
      assert.deepEqual(imageOutcomes(answer), expected.outcomes, `${format}: image outcomes`)
      assert.deepEqual(answer.items.map(({ images: _, ...fields }) => fields), expected.items, `${format}: items as sent (trimmed), with ids and statuses`)
      assert.deepEqual(answer.items.flatMap((i) => i.images.map((img) => img.url)), items.flatMap((i) => i.images), `${format}: URLs as sent`)
      answers[format] = answer
    }
    assert.deepEqual(comparable(answers.json!), comparable(answers.xml!), 'canonical JSON = XML')
    assert.deepEqual(comparable(answers.literal!), comparable(answers.xml!), 'literal mapping = XML')
  }), { numRuns: 40 })
  t.pass(`${runs} batches, each sent in three formats`)
  await assertStillStanding(t, target, sandbox)
})

// ---------------------------------------------------------------------------
// (b) invalid bodies
// ---------------------------------------------------------------------------

const FTP = 'ftp://example.invalid/a.png'
const VALID: TestItem[] = [{ name: 'Tomato Soup', brand: 'Cafe', images: [FTP, FTP] }, { name: 'Crème <brûlée> & co', images: [FTP] }]
const BASES: Array<{ format: Format, payload: string, contentType: string }> = (['xml', 'json', 'literal'] as Format[])
  .map((format) => ({ format, ...batchBody(format, VALID) }))

const contentType = fc.constantFrom('application/json', 'application/xml', 'text/xml', 'application/json; charset=utf-8', 'application/xml; charset=UTF-8')
// Structural characters only: a mutation can break a document or change a value, but
// cannot spell "http" into the ftp: URLs (admitted mutants stay off the network).
const piece = fc.string({ unit: fc.constantFrom('<', '>', '/', '&', ';', '"', "'", '{', '}', '[', ']', ',', ':', '!', '?', '-', '=', ' ', '\n', '#', '\\', '\u0000', 'é', '\uFEFF', '__proto__', 'items', 'item', 'name', 'url', 'images', '<!DOCTYPE x>', '&lt;', '<![CDATA['), minLength: 1, maxLength: 4 })
const mutation = fc.record({
  kind: fc.constantFrom('delete', 'insert', 'replace', 'duplicate', 'truncate', 'swap'),
  at: fc.double({ min: 0, max: 1, noNaN: true }),
  length: fc.integer({ min: 1, max: 40 }),
  text: piece
})
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never

const MUTATIONS: Record<Mutation['kind'], (s: string, at: number, end: number, text: string) => string> = {
  delete: (s, at, end) => s.slice(0, at) + s.slice(end),
  insert: (s, at, _end, text) => s.slice(0, at) + text + s.slice(at),
  replace: (s, at, end, text) => s.slice(0, at) + text + s.slice(end),
  duplicate: (s, at, end) => s.slice(0, end) + s.slice(at, end) + s.slice(end),
  truncate: (s, at) => s.slice(0, at),
  swap: (s, at, end) => s.slice(at, end) + s.slice(0, at) + s.slice(end)
}

function mutate (source: string, mutations: readonly Mutation[]): string {
  return mutations.reduce((s, m) => {
    const at = Math.floor(m.at * s.length)
    return MUTATIONS[m.kind](s, at, Math.min(s.length, at + m.length), m.text)
  }, source)
}

const hostileKey = fc.oneof(fc.constantFrom('__proto__', 'constructor', 'prototype', 'items', 'item', 'name', 'images', 'url', 'toString', 'valueOf', '\\u005f_proto__'), fc.string({ maxLength: 6 }))
/** JSON text (built by hand, so "__proto__" stays an own key as a client would send it) */
const hostileJson: fc.Arbitrary<string> = fc.letrec<{ node: string }>((tie) => ({
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true },
    fc.jsonValue({ maxDepth: 0 }).map((v) => JSON.stringify(v)),
    fc.array(tie('node'), { maxLength: 4 }).map((values) => `[${values.join(',')}]`),
    fc.array(fc.tuple(hostileKey, tie('node')), { maxLength: 4 })
      .map((entries) => `{${entries.map(([k, v]) => `${k.includes('\\') ? `"${k}"` : JSON.stringify(k)}:${v}`).join(',')}}`))
})).node

const tag = fc.constantFrom('items', 'item', 'name', 'images', 'url', 'brand', '__proto__', 'constructor', 'toString', 'x', 'a:b')
/** XML-ish text: nested elements with hostile names, text, comments, CDATA and stray markup */
const xmlish: fc.Arbitrary<string> = fc.letrec<{ node: string }>((tie) => ({
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true },
    fc.string({ maxLength: 8 }).map((s) => s.replace(/[<&]/g, '')),
    fc.constantFrom('<!-- c -->', '<![CDATA[<x>&]]>', '<?pi x?>', '&amp;', '&#x41;', '&xxe;', '<!DOCTYPE x>', '<!ENTITY y "z">', FTP),
    fc.tuple(tag, fc.array(tie('node'), { maxLength: 4 })).map(([name, children]) => `<${name}>${children.join('')}</${name}>`),
    tag.map((name) => `<${name}/>`)
  )
})).node

interface Outcome { status: number, logged: number, message?: string }

async function post (target: Target, payload: string | Buffer, type: string): Promise<Outcome> {
  const before = await countRows(target.app)
  const response = await send(target, { payload, headers: { 'content-type': type } })
  const logged = await countRows(target.app) - before
  return { status: response.statusCode, logged, ...(response.statusCode === 200 ? {} : { message: errorBody(response).message }) }
}

/** never a 5xx; a 4xx says why and logs nothing; a 200 logs one row */
function assertAnswered (outcome: Outcome, what: string): void {
  assert.ok(outcome.status < 500, `${what}: answered ${outcome.status}`)
  if (outcome.status === 200) {
    assert.equal(outcome.logged, 1, `${what}: admitted, so logged once`)
  } else {
    assert.ok(outcome.status >= 400, `${what}: ${outcome.status}`)
    assert.equal(outcome.logged, 0, `${what}: refused, so not logged`)
    assert.ok(typeof outcome.message === 'string' && outcome.message.length > 0, `${what}: says why`)
  }
}

/** random input is never a valid batch: refused */
function assertNeverAdmitted (outcome: Outcome, what: string): void {
  assertAnswered(outcome, what)
  assert.notEqual(outcome.status, 200, `${what}: refused`)
}

t.test('(b) an invalid body never gets a 5xx, and only an admitted request is logged', async (t) => {
  const target = await hostileTarget(t, sandbox, 'sqlite', { PLANS: 'gold=100000,silver=50,bronze=25', ALLOW_PRIVATE_NETWORKS: 'false', BODY_LIMIT_BYTES: '262144' })
  const rowsAtStart = await countRows(target.app)
  let admitted = 0

  t.test('arbitrary strings', async (t) => {
    await fc.assert(fc.asyncProperty(fc.string({ unit: 'binary', maxLength: 300 }), contentType, async (body, type) => {
      assertNeverAdmitted(await post(target, body, type), `${type} ${JSON.stringify(body)}`)
    }), { numRuns: 100 })
    t.pass('100 strings')
  })

  t.test('arbitrary bytes', async (t) => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), contentType, async (bytes, type) => {
      assertNeverAdmitted(await post(target, Buffer.from(bytes), type), `${type} ${Buffer.from(bytes).toString('hex')}`)
    }), { numRuns: 100 })
    t.pass('100 byte strings')
  })

  t.test('random JSON values', async (t) => {
    await fc.assert(fc.asyncProperty(fc.jsonValue().map((v) => JSON.stringify(v)), contentType, async (body, type) => {
      assertNeverAdmitted(await post(target, body, type), `${type} ${body}`)
    }), { numRuns: 100 })
    t.pass('100 JSON values')
  })

  // Built from the batch's own names, these can (rarely) spell a valid batch: then it is
  // admitted and logged once, like any other.
  t.test('JSON documents with hostile keys', async (t) => {
    await fc.assert(fc.asyncProperty(hostileJson, contentType, async (body, type) => {
      const outcome = await post(target, body, type)
      if (outcome.status === 200) admitted++
      assertAnswered(outcome, `${type} ${body}`)
    }), { numRuns: 150 })
    t.pass('150 JSON documents')
  })

  t.test('random XML-ish trees', async (t) => {
    await fc.assert(fc.asyncProperty(xmlish, fc.constantFrom('application/xml', 'text/xml'), async (body, type) => {
      const outcome = await post(target, body, type)
      if (outcome.status === 200) admitted++
      assertAnswered(outcome, `${type} ${body}`)
    }), { numRuns: 150 })
    t.pass('150 XML-ish documents')
  })

  t.test('mutated valid XML and JSON', async (t) => {
    const before = admitted
    await fc.assert(fc.asyncProperty(fc.constantFrom(...BASES), fc.array(mutation, { minLength: 1, maxLength: 4 }), async (base, mutations) => {
      const body = mutate(base.payload, mutations)
      const outcome = await post(target, body, base.contentType)
      // a mutation may leave a valid batch (a changed name): then it is admitted, and logged once
      if (outcome.status === 200) admitted++
      assertAnswered(outcome, `${base.format} ${JSON.stringify(body)}`)
    }), { numRuns: 300 })
    t.pass(`300 mutants, ${admitted - before} of them still valid batches`)
  })

  t.test('afterwards', async (t) => {
    t.equal(await countRows(target.app), rowsAtStart + admitted, `rows only for the ${admitted} generated bodies that were valid batches`)
    await assertStillStanding(t, target, sandbox)
  })
})
