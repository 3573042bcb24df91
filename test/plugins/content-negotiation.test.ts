import t from 'tap'
import Fastify, { type FastifyInstance, type LightMyRequestResponse } from 'fastify'
import formbody from '@fastify/formbody'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { XMLParser } from 'fast-xml-parser'
import contentNegotiation, { type ContentNegotiationOptions } from '../../plugins/content-negotiation.js'
import { batchErrorFormatter, normalizeBatch } from '../../plugins/content-negotiation/batch.js'
import { buildErrorBody, errorHandling } from '../../plugins/content-negotiation/error-handler.js'
import { negotiateFormat } from '../../plugins/content-negotiation/media-types.js'
import { createXmlReader } from '../../plugins/content-negotiation/xml-reader.js'
import { serializeDocument, singularOf, toXml, useXmlAnswers } from '../../plugins/content-negotiation/xml-writer.js'
import { BatchSchema, type Batch } from '../../schemas/batch.js'

// the bits of a tap test the helpers use (the subtest type is not exported under a short name)
type TestLike = Pick<typeof t, 'teardown' | 'equal'>

const BODY_LIMIT = 64 * 1024
const LIMITS = { maxItems: 100, maxImages: 300 }

interface AppOptions extends Partial<ContentNegotiationOptions> {
  bodyLimit?: number
  withFormbody?: boolean
}

/** the plugin alone in a bare app, with a few routes standing in for the service's */
async function build (t: TestLike, options: AppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({ bodyLimit: options.bodyLimit ?? BODY_LIMIT })
  if (options.withFormbody === true) await app.register(formbody)
  await app.register(contentNegotiation, {
    maxItems: options.maxItems ?? LIMITS.maxItems,
    maxImages: options.maxImages ?? LIMITS.maxImages,
    ...(options.maxDepth === undefined ? {} : { maxDepth: options.maxDepth })
  })
  // what the service opts into, here at the root of a bare app
  const negotiation = app.imageDumpNegotiation
  negotiation.readBodies(app, ['json', 'xml'])
  useXmlAnswers(app)
  await app.register(errorHandling)
  // a batch route as the service declares one: reshaped, then validated by BatchSchema
  const batchRoute = { preValidation: negotiation.reshapeBatch, validatorCompiler: TypeBoxValidatorCompiler, schemaErrorFormatter: batchErrorFormatter }
  const typed = app.withTypeProvider<TypeBoxTypeProvider>()
  typed.post('/echo', { ...batchRoute, schema: { body: BatchSchema }, config: { xmlRoot: 'batch' } },
    async (request) => ({ items: request.body.items }))
  app.post('/formats', async (request) => ({ bodyFormat: request.bodyFormat ?? 'none', responseFormat: request.responseFormat }))
  app.get('/doc', async () => sampleResult)
  app.get('/bytes', async (_request, reply) => reply.type('image/png').send(PNG))
  app.get('/text', async () => 'just text')
  app.get('/boom', async () => { throw new Error('database password is hunter2') })
  app.get('/auth', { onRequest: async () => { throw Object.assign(new Error('missing bearer token'), { statusCode: 401 }) } },
    async () => ({ ok: true }))
  app.get('/limited', {
    onRequest: async (_request, reply) => {
      reply.header('retry-after', '60')
      throw Object.assign(new Error('quota exceeded'), { statusCode: 429 })
    }
  }, async () => ({ ok: true }))
  app.get('/throttled', async () => {
    throw Object.assign(new Error('slow down'), { statusCode: 429, headers: { 'retry-after': 30, 'x-ignored': { not: 'a header' } } })
  })
  app.get('/validated', { schema: { querystring: { type: 'object', properties: { n: { type: 'integer' } } } } },
    async () => ({ ok: true }))
  // a route typed by the typebox provider, as the service's routes are: the hook must fit
  typed.post('/typed', {
    ...batchRoute,
    schema: { querystring: Type.Object({ dry: Type.Optional(Type.Boolean()) }), body: BatchSchema },
    preValidation: [negotiation.reshapeBatch]
  }, async (request) => ({ dry: request.query.dry ?? false, count: request.body.items.length }))
  await app.ready()
  t.teardown(() => app.close())
  return app
}

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x3c, 0x3f, 0x78])

const sampleResult = {
  requestId: 7,
  status: 'PARTIAL',
  items: [{
    itemId: 1,
    name: 'Tomato Soup',
    brand: undefined,
    processStatus: 'PARTIAL',
    images: [
      { imageId: 1, url: 'https://example.com/a.png?x=1&y=2', status: 'SUCCESS', bytes: 120, sha256: 'ab' },
      { imageId: 2, url: 'https://example.com/b.png', status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } }
    ]
  }]
}

const SPEC_XML = `<items>
  <item>
    <name>Tomato Soup</name><manufacturer>Cafe world</manufacturer>
    <brand>Cafe</brand><category>Food</category>
    <images><url>https://example.com/a.png</url><url>https://example.com/b.png</url></images>
  </item>
</items>`

const SPEC_BATCH: Batch = {
  items: [{
    name: 'Tomato Soup',
    manufacturer: 'Cafe world',
    brand: 'Cafe',
    category: 'Food',
    images: ['https://example.com/a.png', 'https://example.com/b.png']
  }]
}

/** reads answers back: every item/url/image element a list, every value a string */
const answerParser = new XMLParser({
  parseTagValue: false,
  ignoreDeclaration: true,
  isArray: (name) => name === 'item' || name === 'url' || name === 'image'
})

function readXml (body: string): Record<string, unknown> {
  return answerParser.parse(body) as Record<string, unknown>
}

function escapeXml (s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function batchXml (batch: Batch): string {
  return '<items>' + batch.items.map((item) =>
    '<item>' +
    `<name>${escapeXml(item.name)}</name>` +
    (item.manufacturer === undefined ? '' : `<manufacturer>${escapeXml(item.manufacturer)}</manufacturer>`) +
    '<images>' + item.images.map((u) => `<url>${escapeXml(u)}</url>`).join('') + '</images>' +
    '</item>').join('') + '</items>'
}

function manyItems (n: number, imagesEach = 1): Batch {
  return {
    items: Array.from({ length: n }, (_, i) => ({
      name: `Item ${i + 1}`,
      images: Array.from({ length: imagesEach }, (_, j) => `https://img.example.com/${i + 1}/${j + 1}.jpg`)
    }))
  }
}

const postXml = (app: FastifyInstance, payload: string | Buffer, headers: Record<string, string> = {}, url = '/echo') =>
  app.inject({ method: 'POST', url, payload, headers: { 'content-type': 'application/xml', ...headers } })

const postJson = (app: FastifyInstance, payload: unknown, headers: Record<string, string> = {}, url = '/echo') =>
  app.inject({
    method: 'POST',
    url,
    payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
    headers: { 'content-type': 'application/json', ...headers }
  })

function jsonError (res: LightMyRequestResponse): { statusCode: number, error: string, message: string } {
  return res.json()
}

function xmlError (res: LightMyRequestResponse): { statusCode: string, error: string, message: string } {
  const doc = readXml(res.body)
  return doc['error'] as { statusCode: string, error: string, message: string }
}

function noPollution (t: TestLike): void {
  t.equal(({} as Record<string, unknown>)['polluted'], undefined, 'Object.prototype untouched')
  t.equal(Object.hasOwn(Object.prototype, 'polluted'), false)
}

t.test('XML bodies', async (t) => {
  const app = await build(t)

  t.test("the SPEC's sample XML becomes the canonical batch", async (t) => {
    const res = await postXml(app, SPEC_XML, { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), SPEC_BATCH)
  })

  t.test('text/xml with a charset parameter is XML too', async (t) => {
    const res = await postXml(app, SPEC_XML, { 'content-type': 'text/xml; charset="UTF-8"', accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), SPEC_BATCH)
  })

  t.test('canonical JSON, the literal mapping and XML give the same batch', async (t) => {
    const literal = {
      items: {
        item: [{
          name: 'Tomato Soup',
          manufacturer: 'Cafe world',
          brand: 'Cafe',
          category: 'Food',
          images: { url: ['https://example.com/a.png', 'https://example.com/b.png'] }
        }]
      }
    }
    const [fromXml, fromCanonical, fromLiteral] = await Promise.all([
      postXml(app, SPEC_XML, { accept: 'application/json' }),
      postJson(app, SPEC_BATCH),
      postJson(app, literal)
    ])
    t.same(fromCanonical.json(), SPEC_BATCH)
    t.same(fromLiteral.json(), SPEC_BATCH)
    t.same(fromXml.json(), SPEC_BATCH)
  })

  t.test('a single <item> with a single <url> is still lists', async (t) => {
    const res = await postXml(app, '<items><item><name>Solo</name><images><url>https://e.com/1.png</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { items: [{ name: 'Solo', images: ['https://e.com/1.png'] }] })
    // the literal JSON mapping with single values instead of arrays too
    const literal = await postJson(app, { items: { item: { name: 'Solo', images: { url: 'https://e.com/1.png' } } } })
    t.same(literal.json(), res.json())
  })

  t.test('a 60-item XML batch', async (t) => {
    const batch = manyItems(60, 2)
    const res = await postXml(app, batchXml(batch), { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), batch)
  })

  t.test('tag values stay strings and are trimmed', async (t) => {
    const res = await postXml(app,
      '<items><item><name>  007 </name><brand>true</brand><category>1e3</category><images><url>\n  https://e.com/x.png  \n</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { items: [{ name: '007', brand: 'true', category: '1e3', images: ['https://e.com/x.png'] }] })
  })

  t.test('entities, character references, CDATA and UTF-8 round-trip both ways', async (t) => {
    const xml = '<?xml version="1.0" encoding="UTF-8"?>\n<items><item>' +
      '<name>Crème brûlée 東京 &amp; &#x1F600; &#233;</name>' +
      '<manufacturer><![CDATA[Fish & Chips <Ltd> ]]></manufacturer>' +
      '<images><url>https://e.com/a.png?w=1&amp;h=2</url><url><![CDATA[https://e.com/b.png?w=1&h=2]]></url></images>' +
      '</item></items>'
    const expected: Batch = {
      items: [{
        name: 'Crème brûlée 東京 & 😀 é',
        manufacturer: 'Fish & Chips <Ltd>',
        images: ['https://e.com/a.png?w=1&h=2', 'https://e.com/b.png?w=1&h=2']
      }]
    }
    const asJson = await postXml(app, xml, { accept: 'application/json' })
    t.equal(asJson.statusCode, 200)
    t.same(asJson.json(), expected)

    const asXml = await postXml(app, xml)
    t.equal(asXml.statusCode, 200)
    t.match(asXml.headers['content-type'], /^application\/xml; charset=utf-8/)
    t.ok(asXml.body.startsWith('<?xml version="1.0" encoding="UTF-8"?>'))
    t.match(asXml.body, /<url>https:\/\/e\.com\/a\.png\?w=1&amp;h=2<\/url>/, '& escaped on the way out')
    t.match(asXml.body, /Fish &amp; Chips &lt;Ltd&gt;/)
    const back = readXml(asXml.body)['batch'] as { items: { item: Array<Record<string, unknown>> } }
    t.same(normalizeBatch({ items: back.items }, LIMITS), expected, 'the XML answer reads back to the same batch')

    // and JSON in, XML out, XML in again
    const fromJson = await postJson(app, expected, { accept: 'application/xml' })
    t.equal(fromJson.statusCode, 200)
    const again = await postXml(app, batchXml(normalizeBatch({ items: (readXml(fromJson.body)['batch'] as { items: unknown }).items }, LIMITS)),
      { accept: 'application/json' })
    t.same(again.json(), expected)
  })

  t.test('a UTF-8 BOM is accepted', async (t) => {
    const res = await postXml(app, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(SPEC_XML)]), { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), SPEC_BATCH)
  })

  t.test('attributes are ignored', async (t) => {
    const res = await postXml(app, '<items count="1"><item id="9"><name lang="en">A</name><images><url kind="main">https://e.com/a</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(res.statusCode, 200)
    t.same(res.json(), { items: [{ name: 'A', images: ['https://e.com/a'] }] })
  })
})

t.test('hostile and malformed XML', async (t) => {
  const app = await build(t)
  const item = '<item><name>x</name><images><url>https://e.com/a</url></images></item>'

  t.test('DOCTYPE, billion laughs and external entities are refused, nothing expanded', async (t) => {
    const laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' +
      '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">' +
      '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>' +
      '<items><item><name>&lol3;</name><images><url>https://e.com/a</url></images></item></items>'
    const external = '<?xml version="1.0"?><!DOCTYPE items [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>' +
      '<items><item><name>&xxe;</name><images><url>https://e.com/a</url></images></item></items>'
    const lower = '<!doctype items><items>' + item + '</items>'
    for (const xml of [laughs, external, lower]) {
      const res = await postXml(app, xml, { accept: 'application/json' })
      t.equal(res.statusCode, 400)
      t.equal(jsonError(res).message, 'DOCTYPE is not allowed')
      t.notMatch(res.body, /lollol|root:/)
    }
  })

  t.test('an undefined entity is refused, not passed through', async (t) => {
    const res = await postXml(app, '<items><item><name>&xxe; &nbsp;</name><images><url>https://e.com/a</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(res.statusCode, 400)
    t.match(jsonError(res).message, /undefined entity "&xxe;"/)
    const bad = await postXml(app, '<items><item><name>&#0;</name><images><url>https://e.com/a</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(bad.statusCode, 400)
    t.match(jsonError(bad).message, /invalid character reference/)
  })

  t.test('malformed XML is a 400 with the position, in XML when the client speaks XML', async (t) => {
    const res = await postXml(app, '<items>\n  <item><name>x</name>\n</items>')
    t.equal(res.statusCode, 400)
    t.match(res.headers['content-type'], /^application\/xml/)
    const error = xmlError(res)
    t.equal(error.statusCode, '400')
    t.equal(error.error, 'Bad Request')
    t.match(error.message, /^malformed XML at line 3, column \d+: Expected closing tag 'item'/)

    for (const xml of ['<items><item>', 'just text', '<items/><items/>', `<items>${item}</items>trailing`, '<items><item a="1>x</item></items>', '  ']) {
      const r = await postXml(app, xml, { accept: 'application/json' })
      t.equal(r.statusCode, 400, JSON.stringify(xml))
    }
    const unescaped = await postXml(app, '<items><item><name>x</name><images><url>https://e.com/?a=1&b=2</url></images></item></items>',
      { accept: 'application/json' })
    t.equal(unescaped.statusCode, 400, 'a bare & is not XML')
    t.match(jsonError(unescaped).message, /char '&' is not expected/)
  })

  t.test('nesting past maxDepth is refused, exactly at the limit', async (t) => {
    // items > item > name is 3 levels; 29 more make 32 (the default), 30 more make 33
    const nested = (extra: number, selfClosing = false) => '<items><item><name>' +
      (selfClosing ? '<a>'.repeat(extra - 1) + '<a/>' + '</a>'.repeat(extra - 1) : '<a>'.repeat(extra) + 'x' + '</a>'.repeat(extra)) +
      '</name><images><url>https://e.com/a</url></images></item></items>'
    const atLimit = await postXml(app, nested(29), { accept: 'application/json' })
    t.equal(atLimit.statusCode, 400)
    t.equal(jsonError(atLimit).message, 'items[0].name: must be a string', '32 levels parse (then fail validation)')
    for (const xml of [nested(30), nested(30, true), nested(5000)]) {
      const res = await postXml(app, xml, { accept: 'application/json' })
      t.equal(res.statusCode, 400)
      t.equal(jsonError(res).message, 'malformed XML: elements nested deeper than 32 levels')
    }
    const shallow = await build(t, { maxDepth: 4 })
    t.equal((await postXml(shallow, SPEC_XML)).statusCode, 200, 'a batch needs 4 levels')
    const deeper = await postXml(shallow, '<items><item><name><b><c>x</c></b></name><images><url>u</url></images></item></items>', { accept: 'application/json' })
    t.equal(jsonError(deeper).message, 'malformed XML: elements nested deeper than 4 levels')
  })

  t.test('__proto__, constructor and prototype elements never reach Object.prototype', async (t) => {
    for (const tag of ['__proto__', 'constructor', 'prototype']) {
      const xml = `<items><item><name>x</name><images><url>https://e.com/a</url></images><${tag}><polluted>yes</polluted></${tag}></item></items>`
      const res = await postXml(app, xml, { accept: 'application/json' })
      t.equal(res.statusCode, 400)
      t.equal(jsonError(res).message, `malformed XML: element name "${tag}" is not allowed`)
      const root = await postXml(app, `<${tag}><polluted>yes</polluted></${tag}>`, { accept: 'application/json' })
      t.equal(root.statusCode, 400)
    }
    // names the parser renames rather than refuses end as unknown fields
    const renamed = await postXml(app, '<items><item><name>x</name><images><url>u</url></images><toString>1</toString></item></items>',
      { accept: 'application/json' })
    t.equal(renamed.statusCode, 400)
    t.match(jsonError(renamed).message, /^items\[0\]: unknown field/)
    noPollution(t)
  })

  t.test('an encoding other than UTF-8 is a 415 naming it', async (t) => {
    const byHeader = await postXml(app, SPEC_XML, { 'content-type': 'application/xml; charset=ISO-8859-1', accept: 'application/json' })
    t.equal(byHeader.statusCode, 415)
    t.match(jsonError(byHeader).message, /"iso-8859-1"/)
    const byDeclaration = await postXml(app, `<?xml version="1.0" encoding="windows-1252"?>${SPEC_XML}`, { accept: 'application/json' })
    t.equal(byDeclaration.statusCode, 415)
    t.match(jsonError(byDeclaration).message, /"windows-1252"/)
    const headerWins = await postXml(app, `<?xml version="1.0" encoding="ISO-8859-1"?>${SPEC_XML}`,
      { 'content-type': 'application/xml; charset=utf-8', accept: 'application/json' })
    t.equal(headerWins.statusCode, 200, 'the charset parameter overrides the declaration (RFC 7303)')
    const ascii = await postXml(app, SPEC_XML, { 'content-type': 'text/xml; charset=us-ascii', accept: 'application/json' })
    t.equal(ascii.statusCode, 200)
    const latin1Bytes = Buffer.from('<items><item><name>Cr\xe8me</name><images><url>u</url></images></item></items>', 'latin1')
    const invalid = await postXml(app, latin1Bytes, { accept: 'application/json' })
    t.equal(invalid.statusCode, 400)
    t.equal(jsonError(invalid).message, 'request body is not valid UTF-8')
  })
})

t.test('JSON bodies', async (t) => {
  const app = await build(t)

  t.test('__proto__ and constructor.prototype are refused by the JSON parser', async (t) => {
    const proto = await postJson(app, '{"__proto__":{"polluted":"yes"},"items":[{"name":"x","images":["u"]}]}')
    t.equal(proto.statusCode, 400)
    const ctor = await postJson(app, '{"items":[{"name":"x","images":["u"],"constructor":{"prototype":{"polluted":"yes"}}}]}')
    t.equal(ctor.statusCode, 400)
    const nested = await postJson(app, '{"items":{"item":{"__proto__":{"polluted":"yes"},"name":"x","images":{"url":"u"}}}}')
    t.equal(nested.statusCode, 400)
    noPollution(t)
  })

  t.test('invalid JSON is a 400', async (t) => {
    const res = await postJson(app, '{"items": [')
    t.equal(res.statusCode, 400)
    t.equal(jsonError(res).error, 'Bad Request')
  })
})

t.test('400s name the item index and the field, in both formats', async (t) => {
  const app = await build(t)
  const good = { name: 'ok', images: ['https://e.com/a'] }
  const cases: Array<[string, unknown, string]> = [
    ['missing name', { items: [good, good, good, { images: ['u'] }] }, 'items[3].name: is required'],
    ['non-string name', { items: [{ name: 42, images: ['u'] }] }, 'items[0].name: must be a string'],
    ['empty name', { items: [{ name: '  ', images: ['u'] }] }, 'items[0].name: must not be empty'],
    ['unknown field', { items: [good, { ...good, price: 3 }] }, 'items[1]: unknown field "price"'],
    ['empty images', { items: [{ name: 'x', images: [] }] }, 'items[0].images: at least one image URL is required'],
    ['missing images', { items: [{ name: 'x' }] }, 'items[0].images: is required'],
    ['image not a string', { items: [{ name: 'x', images: ['a', 'b', 7] }] }, 'items[0].images[2]: must be a string'],
    ['empty image', { items: [{ name: 'x', images: ['a', ' '] }] }, 'items[0].images[1]: must not be empty'],
    ['no items', { items: [] }, 'items: at least one item is required'],
    ['items missing', {}, 'items: at least one item is required'],
    ['items not a list', { items: 'x' }, 'items: must be a list'],
    ['images not a list', { items: [{ name: 'x', images: 'https://e.com/a' }] }, 'items[0].images: must be a list'],
    ['item not an object', { items: ['x'] }, 'items[0]: must be an object'],
    ['unknown top-level field', { items: [good], extra: 1 }, 'body: unknown field "extra"'],
    ['not an object', [good], 'body: must be an object with an "items" list']
  ]
  for (const [what, body, message] of cases) {
    const res = await postJson(app, body)
    t.equal(res.statusCode, 400, what)
    t.equal(jsonError(res).message, message, what)
  }

  const xmlCases: Array<[string, string, string]> = [
    ['empty <items/>', '<items/>', 'items: at least one item is required'],
    ['<items></items>', '<items>  </items>', 'items: at least one item is required'],
    ['missing name', '<items><item><images><url>u</url></images></item></items>', 'items[0].name: is required'],
    ['empty <item/>', '<items><item/></items>', 'items[0].name: is required'],
    ['empty <images/>', '<items><item><name>x</name><images/></item></items>', 'items[0].images: at least one image URL is required'],
    ['url with children', '<items><item><name>x</name><images><url>a</url><url><b>c</b></url></images></item></items>', 'items[0].images[1]: must be a string'],
    ['unknown element', '<items><item><name>x</name><price>3</price><images><url>u</url></images></item></items>', 'items[0]: unknown field "price"'],
    ['unknown element in images', '<items><item><name>x</name><images><link>u</link></images></item></items>', 'items[0].images: unknown field "link" (expected a list of <url>)'],
    ['other root', '<batch><item><name>x</name></item></batch>', 'body: expected "items" (the root element <items> in XML), found "batch"']
  ]
  for (const [what, xml, message] of xmlCases) {
    const res = await postXml(app, xml)
    t.equal(res.statusCode, 400, what)
    t.equal(xmlError(res).message, message, what)
  }
})

t.test('limits: 413 naming the setting', async (t) => {
  const app = await build(t, { maxItems: 5, maxImages: 8, bodyLimit: 4096 })

  const items = await postXml(app, batchXml(manyItems(6)), { accept: 'application/json' })
  t.equal(items.statusCode, 413)
  t.equal(jsonError(items).message, 'too many items: 6 > MAX_ITEMS (5)')
  t.equal(jsonError(items).error, 'Payload Too Large')

  const images = await postJson(app, manyItems(3, 3))
  t.equal(images.statusCode, 413)
  t.equal(jsonError(images).message, 'too many image URLs: 9 > MAX_IMAGES (8)')

  const bigXml = '<items><item><name>' + 'x'.repeat(5000) + '</name><images><url>u</url></images></item></items>'
  const tooBig = await postXml(app, bigXml)
  t.equal(tooBig.statusCode, 413)
  t.equal(xmlError(tooBig).message, 'request body is larger than BODY_LIMIT_BYTES (4096 bytes)')
  const tooBigJson = await postJson(app, { items: [{ name: 'x'.repeat(5000), images: ['u'] }] })
  t.equal(tooBigJson.statusCode, 413)
  t.equal(jsonError(tooBigJson).message, 'request body is larger than BODY_LIMIT_BYTES (4096 bytes)')
  t.equal((await postJson(app, manyItems(5, 1))).statusCode, 200, 'at the limits is fine')
})

t.test('415 for bodies that are neither JSON nor XML', async (t) => {
  const app = await build(t)
  const text = await app.inject({ method: 'POST', url: '/echo', payload: 'name=x', headers: { 'content-type': 'text/plain' } })
  t.equal(text.statusCode, 415, 'text/plain (Fastify parses it, the batch hook refuses it)')
  t.equal(jsonError(text).message, 'unsupported media type "text/plain": send application/json, application/xml or text/xml')

  const form = await app.inject({ method: 'POST', url: '/echo', payload: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(form.statusCode, 415, 'form-encoded with no parser (Fastify refuses it)')
  t.equal(jsonError(form).message, 'unsupported media type "application/x-www-form-urlencoded": send application/json, application/xml or text/xml')

  const withForms = await build(t, { withFormbody: true })
  const parsed = await withForms.inject({ method: 'POST', url: '/echo', payload: 'name=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  t.equal(parsed.statusCode, 415, 'form-encoded parsed by @fastify/formbody')
  t.match(jsonError(parsed).message, /application\/x-www-form-urlencoded/)

  const yaml = await app.inject({ method: 'POST', url: '/echo', payload: 'items: []', headers: { 'content-type': 'application/yaml', accept: 'application/xml' } })
  t.equal(yaml.statusCode, 415)
  t.equal(xmlError(yaml).statusCode, '415', 'in the format Accept asks for')

  const none = await app.inject({ method: 'POST', url: '/echo' })
  t.equal(none.statusCode, 400)
  t.match(jsonError(none).message, /^request body is required/)

  const latin1Json = await postJson(app, SPEC_BATCH, { 'content-type': 'application/json; charset=latin1' })
  t.equal(latin1Json.statusCode, 415)
})

t.test('Accept negotiation', async (t) => {
  const app = await build(t)

  t.test('JSON request + Accept: application/xml → XML answer', async (t) => {
    const res = await postJson(app, SPEC_BATCH, { accept: 'application/xml' })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['content-type'], 'application/xml; charset=utf-8')
    t.match(res.headers.vary, /Accept/)
    t.equal(res.body,
      '<?xml version="1.0" encoding="UTF-8"?><batch><items><item><name>Tomato Soup</name><manufacturer>Cafe world</manufacturer>' +
      '<brand>Cafe</brand><category>Food</category><images><url>https://example.com/a.png</url><url>https://example.com/b.png</url>' +
      '</images></item></items></batch>')
  })

  t.test('XML request with no Accept → XML; with Accept: application/json → JSON', async (t) => {
    const xml = await postXml(app, SPEC_XML)
    t.equal(xml.headers['content-type'], 'application/xml; charset=utf-8')
    const wildcard = await postXml(app, SPEC_XML, { accept: '*/*' })
    t.equal(wildcard.headers['content-type'], 'application/xml; charset=utf-8', '*/* falls back to the request format')
    const neither = await postXml(app, SPEC_XML, { accept: 'text/html' })
    t.equal(neither.headers['content-type'], 'application/xml; charset=utf-8', 'neither named: request format')
    const json = await postXml(app, SPEC_XML, { accept: 'application/json' })
    t.match(json.headers['content-type'], /^application\/json/)
    t.same(json.json(), SPEC_BATCH)
    const plain = await postJson(app, SPEC_BATCH)
    t.match(plain.headers['content-type'], /^application\/json/, 'JSON with no Accept stays JSON')
  })

  t.test('q-values are honoured', async (t) => {
    const prefersXml = await postJson(app, SPEC_BATCH, { accept: 'application/json;q=0.5, text/xml;q=0.9' })
    t.match(prefersXml.headers['content-type'], /^application\/xml/)
    const prefersJson = await postXml(app, SPEC_XML, { accept: 'application/xml;q=0.1, application/json' })
    t.match(prefersJson.headers['content-type'], /^application\/json/)
    const refusesXml = await postXml(app, SPEC_XML, { accept: 'application/xml;q=0, */*;q=0.5' })
    t.match(refusesXml.headers['content-type'], /^application\/json/)
  })

  t.test('bodyFormat and responseFormat decorators', async (t) => {
    const xml = await postXml(app, '<anything>at all</anything>', { accept: 'application/json' }, '/formats')
    t.same(xml.json(), { bodyFormat: 'xml', responseFormat: 'json' })
    const json = await postJson(app, { a: 1 }, {}, '/formats')
    t.same(json.json(), { bodyFormat: 'json', responseFormat: 'json' })
    const none = await app.inject({ method: 'POST', url: '/formats', headers: { accept: 'text/xml' } })
    t.equal(readXml(none.body)['result'] !== undefined, true)
    t.same(readXml(none.body)['result'], { bodyFormat: 'none', responseFormat: 'xml' })
  })

  t.test('documents are serialised with the singular rule, root from config or "result"', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/doc', headers: { accept: 'application/xml' } })
    t.equal(res.body,
      '<?xml version="1.0" encoding="UTF-8"?><result><requestId>7</requestId><status>PARTIAL</status><items><item>' +
      '<itemId>1</itemId><name>Tomato Soup</name><processStatus>PARTIAL</processStatus><images>' +
      '<image><imageId>1</imageId><url>https://example.com/a.png?x=1&amp;y=2</url><status>SUCCESS</status><bytes>120</bytes><sha256>ab</sha256></image>' +
      '<image><imageId>2</imageId><url>https://example.com/b.png</url><status>FAILURE</status><error><type>HTTP_ERROR</type><httpStatus>404</httpStatus></error></image>' +
      '</images></item></items></result>')
    const json = await app.inject({ method: 'GET', url: '/doc' })
    t.same(json.json(), JSON.parse(JSON.stringify(sampleResult)))
  })

  t.test('strings and Buffers pass through untouched', async (t) => {
    const bytes = await app.inject({ method: 'GET', url: '/bytes', headers: { accept: 'application/xml' } })
    t.equal(bytes.headers['content-type'], 'image/png')
    t.same(bytes.rawPayload, PNG)
    const text = await app.inject({ method: 'GET', url: '/text', headers: { accept: 'application/xml' } })
    t.match(text.headers['content-type'], /^text\/plain/)
    t.equal(text.body, 'just text')
  })

  t.test('a typebox-typed route accepts the batch hook', async (t) => {
    const res = await postXml(app, SPEC_XML, { accept: 'application/json' }, '/typed?dry=true')
    t.same(res.json(), { dry: true, count: 1 })
  })
})

t.test('errors come in the negotiated format', async (t) => {
  const app = await build(t)

  t.test('a 401 from onRequest, before any body is read', async (t) => {
    const xml = await app.inject({ method: 'GET', url: '/auth', headers: { accept: 'application/xml' } })
    t.equal(xml.statusCode, 401)
    t.equal(xml.body, '<?xml version="1.0" encoding="UTF-8"?><error><statusCode>401</statusCode><error>Unauthorized</error><message>missing bearer token</message></error>')
    const json = await app.inject({ method: 'GET', url: '/auth' })
    t.same(json.json(), { statusCode: 401, error: 'Unauthorized', message: 'missing bearer token' })
    const xmlBody = await app.inject({ method: 'GET', url: '/auth', headers: { 'content-type': 'text/xml' } })
    t.equal(xmlError(xmlBody).statusCode, '401', 'an XML client with no Accept gets XML')
  })

  t.test('headers set before the error are kept', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/limited' })
    t.equal(res.statusCode, 429)
    t.equal(res.headers['retry-after'], '60')
    t.equal(jsonError(res).message, 'quota exceeded')
    const own = await app.inject({ method: 'GET', url: '/throttled' })
    t.equal(own.statusCode, 429)
    t.equal(own.headers['retry-after'], '30', "the error's own headers, as Fastify's default handler sends them")
    t.equal(own.headers['x-ignored'], undefined)
  })

  t.test('5xx are logged, answered generically', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/boom', headers: { accept: 'text/xml' } })
    t.equal(res.statusCode, 500)
    const error = xmlError(res)
    t.equal(error.error, 'Internal Server Error')
    t.notMatch(res.body, /hunter2/)
  })

  t.test('schema validation errors name the field', async (t) => {
    const res = await app.inject({ method: 'GET', url: '/validated?n=abc' })
    t.equal(res.statusCode, 400)
    t.match(jsonError(res).message, /querystring\/n/)
  })

  t.test('404 in the same shape', async (t) => {
    const xml = await app.inject({ method: 'GET', url: '/nope', headers: { accept: 'application/xml' } })
    t.equal(xml.statusCode, 404)
    t.same(xmlError(xml), { statusCode: '404', error: 'Not Found', message: 'Route GET:/nope not found' })
    const json = await app.inject({ method: 'GET', url: '/nope' })
    t.same(json.json(), { statusCode: 404, error: 'Not Found', message: 'Route GET:/nope not found' })
  })
})

t.test('two apps in one process do not share limits or state', async (t) => {
  const [small, large] = await Promise.all([
    build(t, { maxItems: 2, maxImages: 2, maxDepth: 6 }),
    build(t, { maxItems: 50, maxImages: 50 })
  ])
  const batch = batchXml(manyItems(3))
  const [a, b] = await Promise.all([postXml(small, batch, { accept: 'application/json' }), postXml(large, batch, { accept: 'application/json' })])
  t.equal(a.statusCode, 413)
  t.equal(jsonError(a).message, 'too many items: 3 > MAX_ITEMS (2)')
  t.equal(b.statusCode, 200)
  t.same(small.imageDumpNegotiation.limits, { maxItems: 2, maxImages: 2, maxDepth: 6 })
  t.same(large.imageDumpNegotiation.limits, { maxItems: 50, maxImages: 50, maxDepth: 32 })
})

t.test('options are checked at registration', async (t) => {
  for (const options of [{ maxItems: 0, maxImages: 1 }, { maxItems: 1, maxImages: 1.5 }, { maxItems: 1, maxImages: 1, maxDepth: 3 }]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(contentNegotiation, options) }, /content-negotiation: max/)
    await app.close()
  }
})

t.test('normalizeBatch (pure)', async (t) => {
  t.same(normalizeBatch(SPEC_BATCH, LIMITS), SPEC_BATCH, 'canonical')
  t.same(normalizeBatch({ items: { item: { name: ' A ', images: { url: ' u ' } } } }, LIMITS), { items: [{ name: 'A', images: ['u'] }] }, 'literal, single values, trimmed')
  t.same(normalizeBatch({ items: [{ name: 'A', images: { url: ['u', 'v'] } }] }, LIMITS), { items: [{ name: 'A', images: ['u', 'v'] }] }, 'mixed shapes')
  t.same(normalizeBatch({ items: { item: [{ name: '0123', images: { url: ['not a url at all'] } }] } }, LIMITS),
    { items: [{ name: '0123', images: ['not a url at all'] }] }, 'URL syntax is the fetcher\'s business')

  const xml = createXmlReader()
  t.same(normalizeBatch(xml(SPEC_XML), LIMITS), SPEC_BATCH, 'what the XML reader produced')

  t.throws(() => normalizeBatch({ items: Array.from({ length: 6000 }, () => 'junk') }, { maxItems: 5000, maxImages: 20000 }),
    { statusCode: 413, message: 'too many items: 6000 > MAX_ITEMS (5000)' }, 'limits counted before validation')
  t.throws(() => normalizeBatch({ items: [{ images: Array(21).fill(1) }, { images: { url: Array(10).fill(1) } }] }, { maxItems: 5, maxImages: 30 }),
    { statusCode: 413, message: 'too many image URLs: 31 > MAX_IMAGES (30)' })
  t.throws(() => normalizeBatch({ items: { item: [], extra: 1 } }, LIMITS), { statusCode: 400, message: 'items: unknown field "extra" (expected a list of <item>)' })
  t.throws(() => normalizeBatch(null, LIMITS), { statusCode: 400, message: 'body: must be an object with an "items" list' })
  t.throws(() => normalizeBatch('<items/>', LIMITS), { statusCode: 400, message: 'body: must be an object with an "items" list' })

  // an own "__proto__" key, as plain JSON.parse makes one, is a field like any other
  const hostile = JSON.parse('{"items":[{"name":"x","images":["u"],"__proto__":{"polluted":"yes"}}]}') as unknown
  t.throws(() => normalizeBatch(hostile, LIMITS), { statusCode: 400, message: 'items[0]: unknown field "__proto__"' })
  const hostileRoot = JSON.parse('{"__proto__":{"polluted":"yes"},"items":[{"name":"x","images":["u"]}]}') as unknown
  t.throws(() => normalizeBatch(hostileRoot, LIMITS), { statusCode: 400, message: 'body: unknown field "__proto__"' })
  noPollution(t)

  const result = normalizeBatch({ items: [{ name: 'x', images: ['u'] }] }, LIMITS)
  t.equal(Object.getPrototypeOf(result.items[0]), Object.prototype, 'plain objects out')
})

t.test('createXmlReader (pure)', async (t) => {
  const read = createXmlReader({ maxDepth: 8 })
  t.same(read('<items><item><name>007</name><images><url>u</url></images></item></items>'),
    { items: { item: [{ name: '007', images: { url: ['u'] } }] } }, 'the literal mapping, lists kept')
  t.same(read('<items><item><name><![CDATA[ <b>&amp;</b> ]]></name></item></items>'),
    { items: { item: [{ name: ' <b>&amp;</b> ' }] } }, 'CDATA is text, taken verbatim')
  t.throws(() => read('<!DOCTYPE x><x/>'), { statusCode: 400, message: 'DOCTYPE is not allowed' })
  t.throws(() => read(''), { statusCode: 400, message: 'request body is empty' })
})

t.test('toXml and serializeDocument (pure)', async (t) => {
  const decl = '<?xml version="1.0" encoding="UTF-8"?>'
  t.equal(toXml({ items: [{ name: 'a', images: ['u1', 'u2'] }] }, 'batch'),
    `${decl}<batch><items><item><name>a</name><images><url>u1</url><url>u2</url></images></item></items></batch>`)
  t.equal(toXml({ images: [{ imageId: 1 }] }), `${decl}<result><images><image><imageId>1</imageId></image></images></result>`)
  t.equal(toXml({ tags: ['x', 'y'], data: [1, [2, 3]], images: [] }),
    `${decl}<result><tags><tag>x</tag><tag>y</tag></tags><data><entry>1</entry><entry><entry>2</entry><entry>3</entry></entry></data><images></images></result>`)
  t.equal(toXml({ n: 1.5, ok: true, no: false, gone: undefined, nil: null }), `${decl}<result><n>1.5</n><ok>true</ok><no>false</no><nil></nil></result>`)
  t.equal(toXml({ s: '<a href="x">\'&\'</a>' }), `${decl}<result><s>&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;</s></result>`)
  t.equal(toXml({ s: 'bell\u0007 ok' }), `${decl}<result><s>bell\uFFFD ok</s></result>`, 'characters XML cannot carry')
  t.equal(toXml({ '#text': 'x', '@_id': 'y', 'two words': 'z', '1st': 'w' }),
    `${decl}<result><_text>x</_text><__id>y</__id><two_words>z</two_words><_1st>w</_1st></result>`, 'keys made into element names')
  t.equal(toXml({ at: new Date(0) }), `${decl}<result><at>1970-01-01T00:00:00.000Z</at></result>`)
  t.equal(toXml([{ a: 1 }], 'items'), `${decl}<items><item><a>1</a></item></items>`)
  t.equal(serializeDocument({ a: [1] }, 'json', 'x'), '{"a":[1]}')
  t.equal(serializeDocument({ a: [1] }, 'xml', 'x'), `${decl}<x><a><entry>1</entry></a></x>`)
  t.equal(singularOf('items', []), 'item')
  t.equal(singularOf('images', ['u']), 'url')
  t.equal(singularOf('images', [{}]), 'image')
  t.equal(singularOf('urls', []), 'url')
  t.equal(singularOf('data', []), 'entry')
  t.equal(singularOf('s', []), 'entry')
})

t.test('negotiateFormat (pure)', async (t) => {
  t.equal(negotiateFormat(undefined, 'xml'), 'xml')
  t.equal(negotiateFormat('', 'json'), 'json')
  t.equal(negotiateFormat('*/*', 'xml'), 'xml')
  t.equal(negotiateFormat('text/html, image/png', 'xml'), 'xml')
  t.equal(negotiateFormat('application/xml', 'json'), 'xml')
  t.equal(negotiateFormat('Text/XML', 'json'), 'xml')
  t.equal(negotiateFormat('application/json', 'xml'), 'json')
  t.equal(negotiateFormat('application/json;q=0.4, application/xml;q=0.8', 'json'), 'xml')
  t.equal(negotiateFormat('application/json, application/xml', 'xml'), 'xml', 'a tie keeps the request format')
  t.equal(negotiateFormat('application/json;q=0, */*', 'json'), 'xml', 'json refused, anything else welcome')
  t.equal(negotiateFormat('text/*;q=0.9, application/json;q=0.5', 'json'), 'xml')
  t.equal(negotiateFormat('application/xml;q=bogus, application/json;q=0.1', 'xml'), 'json', 'a malformed range is ignored')
})

t.test('buildErrorBody (pure)', async (t) => {
  t.same(buildErrorBody(Object.assign(new Error('nope'), { statusCode: 403 })), { statusCode: 403, error: 'Forbidden', message: 'nope' })
  t.same(buildErrorBody(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }), { bodyLimit: 1024 }),
    { statusCode: 413, error: 'Payload Too Large', message: 'request body is larger than BODY_LIMIT_BYTES (1024 bytes)' })
  t.same(buildErrorBody(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_INVALID_MEDIA_TYPE', statusCode: 415 }), { contentType: 'Image/PNG; q=1' }),
    { statusCode: 415, error: 'Unsupported Media Type', message: 'unsupported media type "image/png": send application/json, application/xml or text/xml' })
  t.same(buildErrorBody(Object.assign(new Error('body/name must be string'), { validation: [], statusCode: 400 })),
    { statusCode: 400, error: 'Bad Request', message: 'body/name must be string' })
  const internal = buildErrorBody(new Error('ECONNREFUSED 10.0.0.5:3306'))
  t.equal(internal.statusCode, 500)
  t.notMatch(internal.message, /ECONNREFUSED/)
  t.same(buildErrorBody(Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:3306'), { statusCode: 503, publicMessage: 'the database is unavailable; try again' })),
    { statusCode: 503, error: 'Service Unavailable', message: 'the database is unavailable; try again' }, 'a 5xx error may carry words written for the client')
  t.equal(buildErrorBody(new Error('x'), { replyStatus: 503 }).statusCode, 503, 'a status the reply already had')
  t.equal(buildErrorBody(new Error('x'), { replyStatus: 201 }).statusCode, 500)
  t.same(buildErrorBody(Object.assign(new Error(''), { status: 409 })), { statusCode: 409, error: 'Conflict', message: 'Conflict' })
  t.equal(buildErrorBody('thrown string').statusCode, 500)
})
