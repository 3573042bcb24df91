import t from 'tap'
import { conditionalHeaders, hasValidators, validatorsOf } from '../../../lib/download/validators.js'

const DATE = 'Tue, 01 Dec 2026 10:00:00 GMT'

t.test('strong and weak ETags and a Last-Modified are kept as sent', async (t) => {
  t.same(validatorsOf({ etag: '"abc"', 'last-modified': DATE }), { etag: '"abc"', lastModified: DATE })
  t.same(validatorsOf({ etag: 'W/"5f-17a"' }), { etag: 'W/"5f-17a"' })
  t.same(validatorsOf({ etag: '""' }), { etag: '""' }, 'an empty opaque tag is a valid ETag')
})

t.test('a value that is not well formed, or too long to keep, is no validator', async (t) => {
  t.same(validatorsOf({ etag: 'abc' }), {}, 'unquoted')
  t.same(validatorsOf({ etag: '"a"b"' }), {}, 'a quote inside')
  t.same(validatorsOf({ etag: 'w/"abc"' }), {}, 'the weak prefix is case-sensitive')
  t.same(validatorsOf({ etag: `"${'x'.repeat(300)}"` }), {}, 'longer than a row keeps')
  t.same(validatorsOf({ etag: ['"a"', '"b"'] }), {}, 'sent twice')
  t.same(validatorsOf({ 'last-modified': 'yesterday' }), {}, 'not a date')
  t.same(validatorsOf({ 'last-modified': `${DATE}${' '.repeat(80)}x` }), {}, 'too long')
  t.same(validatorsOf({}), {})
})

t.test('the conditional headers name exactly the validators there are', async (t) => {
  t.same(conditionalHeaders({ etag: '"abc"', lastModified: DATE }), { 'if-none-match': '"abc"', 'if-modified-since': DATE })
  t.same(conditionalHeaders({ lastModified: DATE }), { 'if-modified-since': DATE })
  t.same(conditionalHeaders({ etag: 'W/"abc"' }), { 'if-none-match': 'W/"abc"' })
  t.equal(hasValidators({}), false)
  t.equal(hasValidators(undefined), false)
  t.equal(hasValidators({ lastModified: DATE }), true)
})
