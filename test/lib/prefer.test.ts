import t from 'tap'
import { parsePrefer, prefersRespondAsync } from '../../lib/prefer.js'

const parsed = (header: string | string[] | undefined) => Object.fromEntries(parsePrefer(header))

t.test('preferences by name, with their values', async (t) => {
  t.same(parsed('respond-async'), { 'respond-async': undefined })
  t.same(parsed('respond-async, wait=10'), { 'respond-async': undefined, wait: '10' })
  t.same(parsed('return=minimal; foo="some parameter"'), { return: 'minimal' }, 'parameters belong to their preference')
  t.same(parsed('handling="strict"'), { handling: 'strict' }, 'a quoted value is unquoted')
  t.same(parsed('x="a \\"b\\" \\\\ c"'), { x: 'a "b" \\ c' }, 'quoted pairs are unescaped')
  t.same(parsed('wait = 100'), { wait: '100' }, 'spaces around "=" (BWS)')
  t.same(parsed(' \trespond-async\t ,wait=1'), { 'respond-async': undefined, wait: '1' }, 'spaces around elements (OWS)')
})

t.test('names are case-insensitive; the first of a repeated preference counts', async (t) => {
  t.same(parsed('RESPOND-ASYNC'), { 'respond-async': undefined })
  t.same(parsed('Respond-Async, WAIT=5'), { 'respond-async': undefined, wait: '5' })
  t.same(parsed('wait=100, wait=200'), { wait: '100' })
  t.same(parsed('Return=Minimal'), { return: 'Minimal' }, 'values keep their case')
})

t.test('several fields read as one list', async (t) => {
  t.same(parsed(['handling=lenient', 'respond-async']), { handling: 'lenient', 'respond-async': undefined })
  t.same(parsed('handling=lenient, respond-async'), { handling: 'lenient', 'respond-async': undefined }, 'as Node joins them')
})

t.test('commas and semicolons inside quoted strings do not split', async (t) => {
  t.same(parsed('foo=";= ,;=", respond-async'), { foo: ';= ,;=', 'respond-async': undefined })
  t.same(parsed('handling=lenient; note="a, b"; respond-async'), { handling: 'lenient' }, 'a parameter named respond-async is not the preference')
})

t.test('malformed elements are ignored, the others kept', async (t) => {
  const cases: Array<[string, Record<string, string | undefined>]> = [
    ['', {}],
    [',,,', {}],
    ['respond async', {}],
    ['respondAsync', { respondasync: undefined }],
    ['"respond-async"', {}],
    ['respond-async=', {}],
    ['respond-async=a b', {}],
    ['=10', {}],
    ['wait=10 respond-async', {}],
    ['wait="unterminated, respond-async', {}],
    ['respond-async;;;', { 'respond-async': undefined }],
    ['respond-async; =x', {}],
    ['ünicode, respond-async', { 'respond-async': undefined }],
    ['wait=1\u0000, respond-async', { 'respond-async': undefined }],
    ['x="ctl\u0001", respond-async', { 'respond-async': undefined }]
  ]
  for (const [header, expected] of cases) t.same(parsed(header), expected, JSON.stringify(header))
})

t.test('respond-async', async (t) => {
  t.equal(prefersRespondAsync(undefined), false, 'no header')
  t.equal(prefersRespondAsync('respond-async'), true)
  t.equal(prefersRespondAsync('RESPOND-ASYNC'), true)
  t.equal(prefersRespondAsync('respond-async, wait=10'), true)
  t.equal(prefersRespondAsync('handling=lenient'), false)
  t.equal(prefersRespondAsync('respond-asynchronously'), false)
  t.equal(prefersRespondAsync(['return=minimal', 'respond-async']), true)
})

t.test('long hostile values are read in linear time', async (t) => {
  const started = performance.now()
  for (const header of [`a;${' '.repeat(16_000)}@`, `a=${'"'.repeat(16_000)}`, `${'a;'.repeat(8000)}`, `x="${'\\'.repeat(16_000)}`]) parsePrefer(header)
  const ms = performance.now() - started
  t.ok(ms < 500, `four 16 KB values in ${ms.toFixed(1)} ms`)
})
