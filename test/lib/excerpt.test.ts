import t from 'tap'
import { clip, EXCERPT_CHARS, quote } from '../../lib/excerpt.js'

t.test('quote: short input whole, in JSON quotes', async (t) => {
  t.equal(quote('price'), '"price"')
  t.equal(quote('a"b\\c\nd\u0000'), '"a\\"b\\\\c\\nd\\u0000"', 'escaped as JSON escapes it')
  t.equal(quote('x'.repeat(EXCERPT_CHARS)), `"${'x'.repeat(EXCERPT_CHARS)}"`, 'exactly the limit is not cut')
})

t.test('quote: long input as a prefix, then an ellipsis', async (t) => {
  const long = 'k'.repeat(16 * 1024 * 1024)
  t.equal(quote(long), `"${'k'.repeat(EXCERPT_CHARS)}"…`)
  t.equal(quote('abcdef', 3), '"abc"…')
  t.equal(quote(`${'a'.repeat(99)}😀tail`), `"${'a'.repeat(99)}"…`, 'a surrogate pair is not cut in half')
  t.equal(quote('\n'.repeat(200)).length, 2 * EXCERPT_CHARS + 3, 'at most 100 characters of input, however they escape')
})

t.test('clip: control characters escaped, cut with an ellipsis', async (t) => {
  t.equal(clip('Unexpected token \'x\', "a\nb\u0007" is not valid JSON'), 'Unexpected token \'x\', "a\\nb\\u0007" is not valid JSON')
  t.equal(clip('line\u2028sep\u0085'), 'line\\u2028sep\\u0085')
  t.equal(clip('/p'.repeat(100), 10), '/p/p/p/p/p…')
  t.equal(clip('short'), 'short')
})
