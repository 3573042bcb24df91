/**
 * Hostile XML bodies on POST /v1/dumps. Each case is refused with a 4xx that says what is
 * wrong (and logs nothing), or admitted and answered per image. Admitted cases point at
 * `ftp://…`, which fails INVALID_URL without touching the network.
 *
 * Decisions asserted here:
 * - BODY_LIMIT_BYTES is 1 MiB for this class, so a 5 MB text node is a 413 naming the limit;
 *   a 600 KB one is under it, read, and refused as a name longer than 1000 characters.
 * - No `<!…>` other than comments and CDATA sections: a DOCTYPE (anywhere outside those),
 *   `<!ENTITY …>` and friends are a 400; nothing is ever expanded or fetched.
 * - Attributes, comments and processing instructions are ignored wherever XML allows them.
 * - The Content-Type charset decides over the XML declaration (RFC 7303); only UTF-8 is read.
 */
import t from 'tap'
import { readFile } from 'node:fs/promises'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { Sandbox, assertStillStanding, hostileTarget, runCases, type Admitted, type HostileCase, type Refused } from './harness.js'

const sandbox = await Sandbox.open(t)
// what external entities, DTDs and stylesheets point at: it must never be asked for anything
const origin = await startOrigin()
t.teardown(() => origin.close())

const BODY_LIMIT = 1024 * 1024
const FTP = 'ftp://example.invalid/a.png'
const IMAGES = `<images><url>${FTP}</url></images>`
const items = (...inner: string[]): string => `<items>${inner.map((i) => `<item>${i}</item>`).join('')}</items>`
const named = (name: string): string => items(`<name>${name}</name>${IMAGES}`)
const nested = (levels: number): string => `${'<a>'.repeat(levels)}x${'</a>'.repeat(levels)}`
const attributes = (count: number): string => Array.from({ length: count }, (_, i) => `a${i}="${i}"`).join(' ')
const corpus = async (file: string): Promise<string> =>
  (await readFile(new URL(`cases/xml/${file}`, import.meta.url), 'utf8')).replaceAll('{{ORIGIN}}', origin.baseUrl)

const refused = (status: Refused['status'], message: RegExp): Refused => ({ status, message })
const admitted = (item?: Record<string, unknown>): Admitted => ({ status: 200, images: ['INVALID_URL'], ...(item === undefined ? {} : { item }) })
const malformed = refused(400, /^malformed XML/)
const doctype = refused(400, /^DOCTYPE is not allowed$/)
const utf16 = (text: string): Buffer => Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(text, 'utf16le')])

const cases: HostileCase[] = [
  // malformed
  { name: 'not XML at all', request: { payload: 'hello, world' }, expected: refused(400, /^malformed XML at line 1, column 1: char 'h' is not expected/) },
  { name: 'an unclosed root', request: { payload: `<items><item><name>x</name>${IMAGES}` }, expected: malformed },
  { name: 'mismatched closing tags', request: { payload: '<items><item></items></item>' }, expected: refused(400, /Expected closing tag 'item'/) },
  { name: 'an unquoted attribute', request: { payload: `<items a=1>${named('x').slice(7)}` }, expected: refused(400, /Attribute 'a' is without value/) },
  { name: 'cut off inside a tag', request: { payload: '<items><item><na' }, expected: malformed },
  { name: 'a closing tag alone', request: { payload: '</items>' }, expected: refused(400, /Closing tag 'items' has not been opened/) },
  { name: 'a doubled "<"', request: { payload: `<${named('x')}` }, expected: refused(400, /is an invalid name/) },
  { name: 'two root elements', request: { payload: named('a') + named('b') }, expected: refused(400, /Multiple possible root nodes/) },
  { name: 'text after the root', request: { payload: `${named('a')}trailing` }, expected: refused(400, /Extra text at the end/) },
  { name: 'a bare ampersand', request: { payload: named('Tom & Jerry') }, expected: refused(400, /char '&' is not expected/) },
  { name: 'a raw control character (U+0001)', request: { payload: named('a\u0001b') }, expected: refused(400, /^malformed XML at line 1, column 21: character U\+0001 is not allowed in XML$/) },
  { name: 'a NUL byte', request: { payload: named('a\u0000b') }, expected: refused(400, /character U\+0000 is not allowed/) },
  { name: 'the non-character U+FFFE', request: { payload: named('a\uFFFEb') }, expected: refused(400, /character U\+FFFE is not allowed/) },
  { name: 'an empty body', request: { payload: '' }, expected: refused(400, /^request body is empty$/) },
  { name: 'a body of whitespace', request: { payload: ' \n\t ' }, expected: refused(400, /^request body is empty$/) },

  // wrong root or shape
  { name: 'root <products>', request: { payload: `<products><item><name>x</name>${IMAGES}</item></products>` }, expected: refused(400, /^body: expected "items" \(the root element <items> in XML\), found "products"$/) },
  { name: 'root <item>', request: { payload: `<item><name>x</name>${IMAGES}</item>` }, expected: refused(400, /^body: expected "items" .*, found "item"$/) },
  { name: 'root <result> (the answer\'s own shape)', request: { payload: `<result>${named('x')}</result>` }, expected: refused(400, /^body: expected "items" .*, found "result"$/) },
  { name: 'root <Items>: XML names are case-sensitive', request: { payload: `<Items><item><name>x</name>${IMAGES}</item></Items>` }, expected: refused(400, /^body: expected "items" .*, found "Items"$/) },
  { name: 'a namespaced root <x:items>', request: { payload: `<x:items xmlns:x="urn:x"><x:item><name>x</name>${IMAGES}</x:item></x:items>` }, expected: refused(400, /^body: expected "items" .*, found "x:items"$/) },
  { name: 'an empty <items/>', request: { payload: '<items/>' }, expected: refused(400, /^items: at least one item is required$/) },
  { name: 'an empty <item/>', request: { payload: '<items><item/></items>' }, expected: refused(400, /^items\[0\]\.name: is required$/) },
  { name: 'two <name>s in one item', request: { payload: items(`<name>a</name><name>b</name>${IMAGES}`) }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'markup inside <name>', request: { payload: named('<b>bold</b>') }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: 'text directly in <images>', request: { payload: items(`<name>x</name><images>${FTP}</images>`) }, expected: refused(400, /^items\[0\]\.images: must be a list$/) },
  { name: 'an empty <url/>', request: { payload: items('<name>x</name><images><url/></images>') }, expected: refused(400, /^items\[0\]\.images\[0\]: must not be empty$/) },
  { name: 'an unknown element in <images>', request: { payload: items(`<name>x</name><images><url>${FTP}</url><link>y</link></images>`) }, expected: refused(400, /^items\[0\]\.images: unknown field "link"/) },

  // DOCTYPE, entities
  { name: 'billion laughs', request: { payload: await corpus('billion-laughs.xml') }, expected: doctype },
  { name: 'quadratic blowup (one 50 KB entity used 500 times)', request: { payload: `<?xml version="1.0"?><!DOCTYPE items [<!ENTITY a "${'a'.repeat(50_000)}">]>${named('&a;'.repeat(500))}` }, expected: doctype },
  { name: 'external entity file:///etc/passwd', request: { payload: await corpus('xxe-file.xml') }, expected: doctype },
  { name: 'external entity over http', request: { payload: await corpus('xxe-http.xml') }, expected: doctype },
  { name: 'external parameter entity (out-of-band exfiltration)', request: { payload: await corpus('xxe-parameter-entity.xml') }, expected: doctype },
  { name: 'an external DTD by PUBLIC id', request: { payload: await corpus('external-dtd.xml') }, expected: doctype },
  { name: 'a lowercase <!doctype>', request: { payload: `<!doctype items>${named('x')}` }, expected: doctype },
  { name: 'a DOCTYPE after a comment', request: { payload: `<?xml version="1.0"?><!-- hi --><!DOCTYPE items>${named('x')}` }, expected: doctype },
  { name: 'an <!ENTITY> declaration without a DOCTYPE', request: { payload: await corpus('entity-without-doctype.xml') }, expected: refused(400, /^malformed XML: "<!ENTITY" is not allowed/) },
  { name: 'an unknown <!x> declaration', request: { payload: items(`<!x><name>N</name>${IMAGES}`) }, expected: refused(400, /^malformed XML: "<!x" is not allowed/) },
  { name: 'an undefined entity', request: { payload: named('&xxe;') }, expected: refused(400, /^malformed XML: undefined entity "&xxe;"/) },
  { name: 'an HTML entity (&nbsp;)', request: { payload: named('a&nbsp;b') }, expected: refused(400, /undefined entity "&nbsp;"/) },
  { name: 'the character reference &#0;', request: { payload: named('&#0;') }, expected: refused(400, /invalid character reference "&#0;"/) },
  { name: 'a surrogate reference &#xD800;', request: { payload: named('&#xD800;') }, expected: refused(400, /invalid character reference "&#xD800;"/) },
  { name: 'a reference past Unicode &#x110000;', request: { payload: named('&#x110000;') }, expected: refused(400, /invalid character reference "&#x110000;"/) },
  { name: 'a 25-digit character reference', request: { payload: named(`&#${'9'.repeat(25)};`) }, expected: refused(400, /invalid character reference/) },
  { name: '&amp;lt; is decoded once', request: { payload: named('&amp;lt;') }, expected: admitted({ name: '&lt;' }) },
  { name: '&#38;lt; is decoded once', request: { payload: named('&#38;lt;') }, expected: admitted({ name: '&lt;' }) },

  // depth
  { name: '32 levels parse (and then fail validation)', request: { payload: named(nested(29)) }, expected: refused(400, /^items\[0\]\.name: must be a string$/) },
  { name: '33 levels', request: { payload: named(nested(30)) }, expected: refused(400, /^malformed XML: elements nested deeper than 32 levels$/) },
  { name: '10 000 levels', request: { payload: named(nested(10_000)) }, expected: refused(400, /nested deeper than 32 levels/) },
  { name: '50 000 levels', request: { payload: named(nested(50_000)) }, expected: refused(400, /nested deeper than 32 levels/) },

  // size
  { name: 'a 5 MB text node is past BODY_LIMIT_BYTES', request: { payload: named('x'.repeat(5 * 1024 * 1024)) }, expected: refused(413, /^request body is larger than BODY_LIMIT_BYTES \(1048576 bytes\)$/) },
  { name: 'a 600 KB text node is under it, and validated like any name', request: { payload: named('x'.repeat(600 * 1024)) }, expected: refused(400, /^items\[0\]\.name: must be at most 1000 characters$/) },
  { name: 'a name of 1000 characters is one', request: { payload: named('x'.repeat(1000)) }, expected: admitted({ name: 'x'.repeat(1000) }) },

  // attributes
  { name: '5 000 attributes on <items> are ignored', request: { payload: `<items ${attributes(5000)}><item><name>x</name>${IMAGES}</item></items>` }, expected: admitted({ name: 'x' }) },
  { name: '5 000 attributes on <url> are ignored', request: { payload: items(`<name>x</name><images><url ${attributes(5000)}>${FTP}</url></images>`) }, expected: admitted({ images: [{ url: FTP }] }) },
  { name: 'a repeated attribute', request: { payload: `<items a="1" a="2"><item><name>x</name>${IMAGES}</item></items>` }, expected: refused(400, /Attribute 'a' is repeated/) },
  { name: '__proto__ and constructor attributes are ignored', request: { payload: `<items __proto__="x" constructor="y"><item prototype="z"><name>x</name>${IMAGES}</item></items>` }, expected: admitted({ name: 'x' }) },

  // encodings
  { name: 'declared ISO-8859-1', request: { payload: `<?xml version="1.0" encoding="ISO-8859-1"?>${named('x')}` }, expected: refused(415, /^unsupported XML encoding "ISO-8859-1": send the body in UTF-8$/) },
  { name: 'declared UTF-16 over UTF-8 bytes', request: { payload: `<?xml version="1.0" encoding="UTF-16"?>${named('x')}` }, expected: refused(415, /unsupported XML encoding "UTF-16"/) },
  { name: 'Content-Type charset=iso-8859-1', request: { payload: named('x'), headers: { 'content-type': 'application/xml; charset=iso-8859-1' } }, expected: refused(415, /^unsupported charset "iso-8859-1"/) },
  { name: 'UTF-16 bytes labelled charset=utf-16', request: { payload: utf16(named('x')), headers: { 'content-type': 'text/xml; charset=utf-16' } }, expected: refused(415, /unsupported charset "utf-16"/) },
  { name: 'UTF-16LE bytes with a BOM, unlabelled', request: { payload: utf16(`<?xml version="1.0" encoding="UTF-16"?>${named('x')}`) }, expected: refused(400, /^request body is not valid UTF-8$/) },
  { name: 'UTF-16BE bytes without a BOM', request: { payload: Buffer.from(named('x'), 'utf16le').swap16() }, expected: refused(400, /character U\+0000 is not allowed/) },
  { name: 'Latin-1 bytes, undeclared', request: { payload: Buffer.from(named('Crème'), 'latin1') }, expected: refused(400, /^request body is not valid UTF-8$/) },
  { name: 'declared ISO-8859-1, labelled UTF-8: the label wins (RFC 7303)', request: { payload: `<?xml version="1.0" encoding="ISO-8859-1"?>${named('Crème')}`, headers: { 'content-type': 'application/xml; charset=utf-8' } }, expected: admitted({ name: 'Crème' }) },
  { name: 'a lowercase encoding="utf-8"', request: { payload: `<?xml version="1.0" encoding="utf-8"?>${named('東京')}` }, expected: admitted({ name: '東京' }) },
  { name: 'a UTF-8 BOM', request: { payload: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`<?xml version="1.0"?>${named('Soup')}`)]) }, expected: admitted({ name: 'Soup' }) },
  { name: 'a BOM then whitespace before the declaration', request: { payload: `\uFEFF <?xml version="1.0"?>${named('x')}` }, expected: refused(400, /XML declaration allowed only at the start of the document/) },
  { name: 'a second XML declaration', request: { payload: `<?xml version="1.0"?><?xml version="1.0"?>${named('x')}` }, expected: refused(400, /XML declaration allowed only at the start/) },

  // processing instructions
  { name: 'a PHP processing instruction before the root', request: { payload: `<?php system('id') ?>${named('x')}` }, expected: admitted({ name: 'x' }) },
  { name: 'a processing instruction inside a name', request: { payload: named('Tom<?pi data?>ato') }, expected: admitted({ name: 'Tomato' }) },
  { name: 'an xml-stylesheet pointing at an origin (never fetched)', request: { payload: `<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="${origin.url('/evil.xsl')}"?>${named('x')}` }, expected: admitted({ name: 'x' }) },

  // comments
  { name: 'comments before the root and between items', request: { payload: `<!-- a --><items><!-- b --><item><name>x</name>${IMAGES}</item><!-- c --></items><!-- d -->` }, expected: admitted({ name: 'x' }) },
  { name: 'a comment splitting a name', request: { payload: named('Tom<!-- x -->ato') }, expected: admitted({ name: 'Tomato' }) },
  { name: 'a comment hiding an item is not an item', request: { payload: `<items><!-- <item><name>x</name>${IMAGES}</item> --></items>` }, expected: refused(400, /^items: at least one item is required$/) },
  { name: 'a comment mentioning <!DOCTYPE> is a comment', request: { payload: `<!-- <!DOCTYPE items> -->${named('x')}` }, expected: admitted({ name: 'x' }) },
  { name: 'a comment before the XML declaration', request: { payload: `<!-- x --><?xml version="1.0"?>${named('x')}` }, expected: refused(400, /XML declaration allowed only at the start/) },
  { name: 'an unterminated comment', request: { payload: `<items><!-- <item><name>x</name>${IMAGES}</item></items>` }, expected: malformed },

  // CDATA
  { name: 'markup in CDATA is text', request: { payload: named('<![CDATA[<item>evil</item>]]>') }, expected: admitted({ name: '<item>evil</item>' }) },
  { name: 'an entity reference in CDATA is text', request: { payload: named('<![CDATA[&xxe;]]>') }, expected: admitted({ name: '&xxe;' }) },
  { name: '"]]>" split over two CDATA sections', request: { payload: named('<![CDATA[]]]]><![CDATA[>]]>') }, expected: admitted({ name: ']]>' }) },
  { name: 'a DOCTYPE inside CDATA is text', request: { payload: named('<![CDATA[<!DOCTYPE x [<!ENTITY y "z">]>]]>') }, expected: admitted({ name: '<!DOCTYPE x [<!ENTITY y "z">]>' }) },
  { name: 'a CDATA URL is taken literally (&amp; stays)', request: { payload: items(`<name>x</name><images><url><![CDATA[${FTP}?a=1&amp;b=2]]></url></images>`) }, expected: admitted({ images: [{ url: `${FTP}?a=1&amp;b=2` }] }) },
  { name: 'an unterminated CDATA section', request: { payload: items(`<name><![CDATA[x</name>${IMAGES}`) }, expected: malformed },

  // prototype pollution
  { name: 'a <__proto__> element in an item', request: { payload: items(`<name>x</name>${IMAGES}<__proto__><polluted>yes</polluted></__proto__>`) }, expected: refused(400, /^malformed XML: element name "__proto__" is not allowed$/) },
  { name: '<constructor><prototype> in an item', request: { payload: items(`<name>x</name>${IMAGES}<constructor><prototype><polluted>yes</polluted></prototype></constructor>`) }, expected: refused(400, /element name "constructor" is not allowed/) },
  { name: 'a <__proto__> root', request: { payload: '<__proto__><polluted>yes</polluted></__proto__>' }, expected: refused(400, /element name "__proto__" is not allowed/) },
  { name: '<__proto__> inside <images>', request: { payload: items(`<name>x</name><images><__proto__><url>${FTP}</url></__proto__></images>`) }, expected: refused(400, /element name "__proto__" is not allowed/) },
  { name: 'a <toString> field', request: { payload: items(`<name>x</name>${IMAGES}<toString>1</toString>`) }, expected: refused(400, /^items\[0\]: unknown field/) },

  // the answer's own language
  { name: 'errors come back in XML when Accept is absent', request: { payload: 'hello', headers: { accept: undefined } }, expected: refused(400, /^malformed XML at line 1, column 1: char 'h' is not expected\.$/) }
]

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: hostile XML`, async (t) => {
    const target = await hostileTarget(t, sandbox, engine,
      { BODY_LIMIT_BYTES: String(BODY_LIMIT), ALLOW_PRIVATE_NETWORKS: 'false' },
      { 'content-type': 'application/xml' })
    runCases(t, target, cases)

    t.test('afterwards', async (t) => {
      await assertStillStanding(t, target, sandbox)
      t.equal(origin.requests, 0, 'no external entity, DTD or stylesheet was fetched')
    })
  })
}
