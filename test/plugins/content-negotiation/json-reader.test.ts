import t from 'tap'
import { createJsonReader, DEFAULT_JSON_MAX_DEPTH, nestsDeeperThan, readJson } from '../../../plugins/content-negotiation/json-reader.js'

const deeper = (text: string, max: number): boolean => nestsDeeperThan(Buffer.from(text), max)

t.test('nestsDeeperThan counts arrays and objects, not what strings say', async (t) => {
  t.equal(deeper('[[[]]]', 3), false, 'exactly the limit')
  t.equal(deeper('[[[[]]]]', 3), true, 'one more')
  t.equal(deeper('{"a":{"b":[1]}}', 3), false)
  t.equal(deeper('{"a":{"b":[{}]}}', 3), true)
  t.equal(deeper('[1],[2],[3],[4]', 1), false, 'siblings do not add up')
  t.equal(deeper('["[[[[", "{{{{"]', 1), false, 'brackets inside strings')
  t.equal(deeper('["\\"[[[[", "\\\\", [[]]]', 2), true, 'escaped quotes and backslashes do not end or start a string')
  t.equal(deeper('["\\\\"]', 1), false, 'an escaped backslash before the closing quote')
  t.equal(deeper('["東京[", [["😀"]]]', 3), false, 'multi-byte characters')
  t.equal(deeper(']]]][[[[', 3), true, 'closing brackets first do not buy depth')
  t.equal(deeper('[['.repeat(8 * 1024 * 1024), DEFAULT_JSON_MAX_DEPTH), true, '16 MiB of [')
})

t.test('createJsonReader: charset, then depth, then bytes, then JSON', async (t) => {
  const read = createJsonReader({ maxDepth: 4 })
  t.same(read(Buffer.from('{"items":[{"images":["u"]}]}')), { items: [{ images: ['u'] }] })
  t.throws(() => read(Buffer.from('[[[[[1]]]]]')), { statusCode: 400, message: 'JSON nested deeper than 4 levels (arrays and objects)' })
  t.throws(() => read(Buffer.from('[[[[[1]]]]]'), 'latin1'), { statusCode: 415, message: 'unsupported charset "latin1": send the body in UTF-8' })
  t.throws(() => read(Buffer.from([0x5b, 0xe8, 0x5d])), { statusCode: 400, message: 'request body is not valid UTF-8' })
  t.throws(() => read(Buffer.from('')), { statusCode: 400, message: 'request body is empty' })
  // eslint-disable-next-line no-control-regex -- the control character must not be quoted raw
  t.throws(() => read(Buffer.from('{"a":\n\u0001')), { statusCode: 400, message: /^malformed JSON: [^\n\u0001]*$/ }, 'the parser\'s quote of the input, escaped')
})

t.test('readJson names a forbidden key by a bounded path', async (t) => {
  const long = 'k'.repeat(10_000)
  t.throws(() => readJson(`{"${long}":{"__proto__":1}}`), { statusCode: 400, message: `${'k'.repeat(100)}…: the key "__proto__" is not allowed` })
  t.throws(() => readJson('{"a\\nb":{"__proto__":1}}'), { message: 'a\\nb: the key "__proto__" is not allowed' })
})
