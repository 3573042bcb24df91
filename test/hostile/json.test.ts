/**
 * Hostile JSON bodies on POST /v1/dumps. Each case is refused with a 4xx that says what is
 * wrong (and logs nothing), or admitted and answered per image. Admitted cases point at
 * `ftp://…`, which fails INVALID_URL without touching the network.
 *
 * Decisions asserted here:
 * - An own "__proto__" key, or a "constructor" object with a "prototype", is refused anywhere
 *   in the document, named by its path; as a *value* "__proto__" is just text.
 * - Duplicate keys: the last one wins, as in JSON.parse (and the logged record shows it).
 * - Arrays and objects nested deeper than 64 levels are refused before JSON.parse runs, by a
 *   count over the bytes (brackets inside strings do not count); up to 64, the checks after
 *   the parser are iterative, and the schema stops at the first level that is wrong.
 * - The body must be valid UTF-8; a JSON string may still carry any character JSON can
 *   escape (\u0000, a lone surrogate), and is answered and logged as sent.
 */
import t from 'tap'
import { enginesUnderTest } from '../helpers/db.js'
import { Sandbox, assertStillStanding, hostileTarget, runCases, type Admitted, type HostileCase, type Refused } from './harness.js'

const sandbox = await Sandbox.open(t)

const env = { BODY_LIMIT_BYTES: String(1024 * 1024), MAX_ITEMS: '50', MAX_IMAGES: '100', ALLOW_PRIVATE_NETWORKS: 'false' }
const FTP = 'ftp://example.invalid/a.png'
const good = { name: 'Tomato Soup', images: [FTP] }
const json = (value: unknown): string => JSON.stringify(value)
/** a document whose first item carries `field` verbatim (raw JSON text) */
const withItemField = (field: string): string => `{"items":[{"name":"x","images":["${FTP}"],${field}}]}`
const withName = (raw: string): string => `{"items":[{"name":${raw},"images":["${FTP}"]}]}`
const deepArrays = (levels: number): string => `${'['.repeat(levels)}${']'.repeat(levels)}`
const deepObjects = (levels: number, leaf = '1', key = 'a'): string => `${`{"${key}":`.repeat(levels)}${leaf}${'}'.repeat(levels)}`
const bytes = (...parts: Array<string | number[]>): Buffer => Buffer.concat(parts.map((p) => typeof p === 'string' ? Buffer.from(p) : Buffer.from(p)))

const refused = (status: Refused['status'], message: RegExp): Refused => ({ status, message })
const admitted = (item?: Record<string, unknown>, images = ['INVALID_URL']): Admitted => ({ status: 200, images, ...(item === undefined ? {} : { item }) })
const notAnObject = refused(400, /^body: must be an object with an "items" list$/)
const tooDeep = refused(400, /^JSON nested deeper than 64 levels \(arrays and objects\)$/)

const cases: HostileCase[] = [
  // prototype pollution
  { name: '__proto__ at the top level', request: { payload: `{"__proto__":{"polluted":true},"items":[${json(good)}]}` }, expected: refused(400, /^body: the key "__proto__" is not allowed$/) },
  { name: '__proto__ inside an item', request: { payload: withItemField('"__proto__":{"polluted":true}') }, expected: refused(400, /^items\[0\]: the key "__proto__" is not allowed$/) },
  { name: 'constructor.prototype inside an item', request: { payload: withItemField('"constructor":{"prototype":{"polluted":true}}') }, expected: refused(400, /^items\[0\]: the key "constructor" is not allowed$/) },
  { name: 'constructor.prototype at the top level', request: { payload: `{"constructor":{"prototype":{"isAdmin":true}},"items":[${json(good)}]}` }, expected: refused(400, /^body: the key "constructor" is not allowed$/) },
  { name: '__proto__ in the literal mapping\'s item', request: { payload: `{"items":{"item":{"__proto__":{"polluted":1},"name":"x","images":{"url":["${FTP}"]}}}}` }, expected: refused(400, /^items\.item: the key "__proto__" is not allowed$/) },
  { name: '__proto__ as the images wrapper', request: { payload: `{"items":[{"name":"x","images":{"__proto__":["${FTP}"]}}]}` }, expected: refused(400, /^items\[0\]\.images: the key "__proto__" is not allowed$/) },
  { name: '__proto__ spelled with \\u escapes', request: { payload: `{"\\u005f\\u005fproto\\u005f\\u005f":{"polluted":true},"items":[${json(good)}]}` }, expected: refused(400, /^body: the key "__proto__" is not allowed$/) },
  // 3 levels to the item, 58 down x, the object holding __proto__ and its value: 63
  { name: '__proto__ 61 levels down', request: { payload: withItemField(`"x":${deepObjects(58, '{"__proto__":{"polluted":1}}', 'level')}`) }, expected: refused(400, /^items\[0\]\.x\.level\.level.*… \(61 levels down\): the key "__proto__" is not allowed$/) },
  { name: '__proto__ 10 000 levels down is too deep to be parsed at all', request: { payload: withItemField(`"x":${deepObjects(10_000, '{"__proto__":{"polluted":1}}')}`) }, expected: tooDeep },
  { name: 'constructor as a plain field', request: { payload: withItemField('"constructor":"x"') }, expected: refused(400, /^items\[0\]: unknown field "constructor"$/) },
  { name: 'a prototype field', request: { payload: withItemField('"prototype":{"polluted":1}') }, expected: refused(400, /^items\[0\]: unknown field "prototype"$/) },
  { name: 'toString and hasOwnProperty fields', request: { payload: withItemField('"toString":"x","hasOwnProperty":"y"') }, expected: refused(400, /^items\[0\]: unknown field "toString"$/) },
  { name: '"__proto__" as a value is only text', request: { payload: json({ items: [{ name: '__proto__', brand: 'constructor', images: [FTP] }] }) }, expected: admitted({ name: '__proto__', brand: 'constructor' }) },

  // wrong types
  { name: 'a numeric name', request: { payload: withName('42') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'an array name', request: { payload: withName('["a","b"]') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'an object name', request: { payload: withName('{"first":"a"}') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'a boolean name', request: { payload: withName('true') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'a numeric brand', request: { payload: withItemField('"brand":7') }, expected: refused(400, /^items\[0\]\.brand: must be a string$/) },
  { name: 'images as one string', request: { payload: json({ items: [{ name: 'x', images: FTP }] }) }, expected: refused(400, /^items\[0\]\.images: must be a list$/) },
  { name: 'a numeric image URL', request: { payload: json({ items: [{ name: 'x', images: [1] }] }) }, expected: refused(400, /^items\[0\]\.images\[0\]: must be a string$/) },
  { name: 'items as a string', request: { payload: '{"items":"all of them"}' }, expected: refused(400, /^items: must be a list$/) },
  { name: 'items as a number', request: { payload: '{"items":3}' }, expected: refused(400, /^items: must be a list$/) },
  { name: 'an item that is a string', request: { payload: '{"items":["x"]}' }, expected: refused(400, /^items\[0\]: must be an object$/) },
  { name: 'an empty name', request: { payload: withName('""') }, expected: refused(400, /^items\[0\]\.name: must not be empty$/) },
  { name: 'a name of whitespace', request: { payload: withName('" \\t\\n "') }, expected: refused(400, /^items\[0\]\.name: must not be empty$/) },
  { name: 'no image URL', request: { payload: json({ items: [{ name: 'x', images: [] }] }) }, expected: refused(400, /^items\[0\]\.images: at least one image URL is required$/) },
  { name: 'no item', request: { payload: '{"items":[]}' }, expected: refused(400, /^items: at least one item is required$/) },
  { name: 'no item in the literal mapping', request: { payload: '{"items":{}}' }, expected: refused(400, /^items: at least one item is required$/) },
  { name: 'an extra field beside item in the literal mapping', request: { payload: `{"items":{"item":[${json(good)}],"extra":1}}` }, expected: refused(400, /^items: unknown field "extra"/) },
  { name: 'an extra top-level field', request: { payload: `{"items":[${json(good)}],"admin":true}` }, expected: refused(400, /^body: unknown field "admin"$/) },
  { name: 'no items at all', request: { payload: '{"products":[]}' }, expected: refused(400, /^body: expected "items" \(the root element <items> in XML\), found "products"$/) },

  // nulls
  { name: 'a null body', request: { payload: 'null' }, expected: notAnObject },
  { name: 'null items', request: { payload: '{"items":null}' }, expected: refused(400, /^items: must be a list$/) },
  { name: 'a null item', request: { payload: '{"items":[null]}' }, expected: refused(400, /^items\[0\]: must be an object$/) },
  { name: 'a null name', request: { payload: withName('null') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'a null brand', request: { payload: withItemField('"brand":null') }, expected: refused(400, /^items\[0\]\.brand: must be a string$/) },
  { name: 'null images', request: { payload: '{"items":[{"name":"x","images":null}]}' }, expected: refused(400, /^items\[0\]\.images: must be a list$/) },
  { name: 'a null URL', request: { payload: '{"items":[{"name":"x","images":[null]}]}' }, expected: refused(400, /^items\[0\]\.images\[0\]: must be a string$/) },

  // numbers
  { name: 'a name of 1e400 (Infinity to JSON.parse)', request: { payload: withName('1e400') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'a 40-digit integer', request: { payload: withItemField(`"brand":${'9'.repeat(40)}`) }, expected: refused(400, /^items\[0\]\.brand: must be a string$/) },
  { name: 'NaN is not JSON', request: { payload: withName('NaN') }, expected: refused(400, /^malformed JSON: Unexpected token 'N'/) },
  { name: 'Infinity is not JSON', request: { payload: withName('-Infinity') }, expected: refused(400, /^malformed JSON/) },
  { name: 'a hex number is not JSON', request: { payload: withName('0x10') }, expected: refused(400, /^malformed JSON/) },

  // depth
  { name: '64 levels are parsed, then validated', request: { payload: `{"items":[${deepArrays(62)}]}` }, expected: refused(400, /^items\[0\]: must be an object$/) },
  { name: '65 levels are not', request: { payload: `{"items":[${deepArrays(63)}]}` }, expected: tooDeep },
  { name: '10 000 nested arrays as an item', request: { payload: `{"items":${deepArrays(10_000)}}` }, expected: tooDeep },
  { name: '10 000 nested objects in a name', request: { payload: withName(deepObjects(10_000)) }, expected: tooDeep },
  { name: '10 000 nested objects in an unknown field', request: { payload: withItemField(`"x":${deepObjects(10_000)}`) }, expected: tooDeep },
  { name: '100 000 nested arrays as the body', request: { payload: deepArrays(100_000) }, expected: tooDeep },
  { name: '100 000 opening brackets and nothing else', request: { payload: '['.repeat(100_000) }, expected: tooDeep },
  { name: 'brackets inside strings do not count', request: { payload: withName(JSON.stringify(`"${'['.repeat(500)}\\"{`)) }, expected: admitted({ name: `"${'['.repeat(500)}\\"{` }) },

  // duplicate keys: the last wins
  { name: 'duplicate "items": the last one is processed', request: { payload: `{"items":[{"name":"first","images":["${FTP}"]}],"items":[{"name":"last","images":["${FTP}","${FTP}"]}]}` }, expected: admitted({ name: 'last' }, ['INVALID_URL', 'INVALID_URL']) },
  { name: 'duplicate "name": the last one is kept', request: { payload: `{"items":[{"name":"first","name":"last","images":["${FTP}"]}]}` }, expected: admitted({ name: 'last' }) },

  // trailing garbage and other syntax
  { name: 'garbage after the document', request: { payload: `${json({ items: [good] })} xyz` }, expected: refused(400, /^malformed JSON: Unexpected non-whitespace character after JSON at position \d+/) },
  { name: 'two documents back to back', request: { payload: json({ items: [good] }).repeat(2) }, expected: refused(400, /^malformed JSON: Unexpected non-whitespace character after JSON/) },
  { name: 'a trailing comma', request: { payload: `{"items":[${json(good)},]}` }, expected: refused(400, /^malformed JSON/) },
  { name: 'a comment', request: { payload: `{"items":[/* one */${json(good)}]}` }, expected: refused(400, /^malformed JSON: Unexpected token '\/'/) },
  { name: 'single quotes', request: { payload: "{'items':[]}" }, expected: refused(400, /^malformed JSON/) },
  { name: 'cut off', request: { payload: '{"items":[{"name":"x"' }, expected: refused(400, /^malformed JSON/) },
  { name: 'trailing whitespace is fine', request: { payload: `${json({ items: [good] })}\n\r\n\t ` }, expected: admitted({ name: 'Tomato Soup' }) },

  // not an object
  { name: 'an empty body', request: { payload: '' }, expected: refused(400, /^request body is empty$/) },
  { name: 'a body of whitespace', request: { payload: '  \n ' }, expected: refused(400, /^request body is empty$/) },
  { name: 'a JSON string', request: { payload: '"items"' }, expected: notAnObject },
  { name: 'a JSON array', request: { payload: `[${json(good)}]` }, expected: notAnObject },
  { name: 'a JSON number', request: { payload: '42' }, expected: notAnObject },
  { name: 'a JSON boolean', request: { payload: 'true' }, expected: notAnObject },

  // bytes and characters
  { name: 'a Latin-1 byte (invalid UTF-8)', request: { payload: bytes('{"items":[{"name":"Cr', [0xe8], `me","images":["${FTP}"]}]}`) }, expected: refused(400, /^request body is not valid UTF-8$/) },
  { name: 'an overlong UTF-8 quote (C0 A2)', request: { payload: bytes('{"items":[{"name":"x', [0xc0, 0xa2], `","images":["${FTP}"]}]}`) }, expected: refused(400, /^request body is not valid UTF-8$/) },
  { name: 'a UTF-8-encoded surrogate (ED A0 80)', request: { payload: bytes('{"items":[{"name":"x', [0xed, 0xa0, 0x80], `","images":["${FTP}"]}]}`) }, expected: refused(400, /^request body is not valid UTF-8$/) },
  { name: 'UTF-16LE bytes', request: { payload: Buffer.from(json({ items: [good] }), 'utf16le') }, expected: refused(400, /^malformed JSON/) },
  { name: 'charset=iso-8859-1', request: { payload: json({ items: [good] }), headers: { 'content-type': 'application/json; charset=iso-8859-1' } }, expected: refused(415, /^unsupported charset "iso-8859-1"/) },
  { name: 'a UTF-8 BOM', request: { payload: bytes([0xef, 0xbb, 0xbf], json({ items: [good] })) }, expected: admitted({ name: 'Tomato Soup' }) },
  { name: 'an escaped NUL in a name is kept', request: { payload: withName('"a\\u0000b"') }, expected: admitted({ name: 'a\u0000b' }) },
  { name: 'an escaped lone surrogate in a name is kept', request: { payload: withName('"a\\ud800b"') }, expected: admitted({ name: 'a\ud800b' }) },

  // limits
  { name: 'more items than MAX_ITEMS', request: { payload: json({ items: Array.from({ length: 51 }, () => good) }) }, expected: refused(413, /^too many items: 51 > MAX_ITEMS \(50\)$/) },
  { name: 'more image URLs than MAX_IMAGES', request: { payload: json({ items: [{ name: 'x', images: Array.from({ length: 101 }, () => FTP) }] }) }, expected: refused(413, /^too many image URLs: 101 > MAX_IMAGES \(100\)$/) },
  { name: 'a body past BODY_LIMIT_BYTES', request: { payload: json({ items: [{ name: 'x'.repeat(1024 * 1024), images: [FTP] }] }) }, expected: refused(413, /^request body is larger than BODY_LIMIT_BYTES \(1048576 bytes\)$/) },

  // the wrong language
  { name: 'JSON labelled application/xml', request: { payload: json({ items: [good] }), headers: { 'content-type': 'application/xml' } }, expected: refused(400, /^malformed XML/) },
  { name: 'XML labelled application/json', request: { payload: `<items><item><name>x</name><images><url>${FTP}</url></images></item></items>` }, expected: refused(400, /^malformed JSON: Unexpected token '<'/) }
]

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: hostile JSON`, async (t) => {
    const target = await hostileTarget(t, sandbox, engine, env)
    runCases(t, target, cases)
    t.test('afterwards', async (t) => {
      await assertStillStanding(t, target, sandbox)
    })
  })
}
