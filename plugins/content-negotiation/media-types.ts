/**
 * Content-Type and Accept: which of the two body formats a request is in, which one its
 * answer should be in, and the charset rule (UTF-8 only, decoded strictly).
 */
import { parse } from 'content-type'
import type { IncomingHttpHeaders } from 'node:http'
import type { FastifyReply } from 'fastify'
import type { BodyFormat } from '../../schemas/batch.js'
import { BadRequestError, UnsupportedMediaTypeError } from '../../lib/errors.js'
import { quote } from '../../lib/excerpt.js'

export const XML_MEDIA_TYPES = ['application/xml', 'text/xml'] as const
export const JSON_MEDIA_TYPE = 'application/json'
/** What a batch may be sent as, in the words of a 415. */
export const ACCEPTED_MEDIA_TYPES = 'application/json, application/xml or text/xml'
/** The Content-Type of an answer in each format. */
export const CONTENT_TYPES: Readonly<Record<BodyFormat, string>> = Object.freeze({
  json: 'application/json; charset=utf-8',
  xml: 'application/xml; charset=utf-8'
})
const UTF8_CHARSETS: ReadonlySet<string> = new Set(['utf-8', 'utf8', 'us-ascii'])

/** The media type of a Content-Type, lower-cased, without parameters; undefined when empty. */
export function mediaTypeOf (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  const { type } = parse(contentType, { parameters: false })
  return type === '' ? undefined : type
}

/** The format a Content-Type names, whether or not a body was parsed. */
export function formatOfContentType (contentType: string | undefined): BodyFormat | undefined {
  const type = mediaTypeOf(contentType)
  if (type === JSON_MEDIA_TYPE) return 'json'
  if (type === XML_MEDIA_TYPES[0] || type === XML_MEDIA_TYPES[1]) return 'xml'
  return undefined
}

/** The charset parameter of a Content-Type, lower-cased and unquoted. */
export function charsetOf (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  return parse(contentType).parameters['charset']?.toLowerCase()
}

export function assertUtf8Charset (charset: string | undefined): void {
  if (charset !== undefined && !UTF8_CHARSETS.has(charset)) {
    throw new UnsupportedMediaTypeError(`unsupported charset ${quote(charset)}: send the body in UTF-8`)
  }
}

/** Whether an encoding named in an XML declaration is one of the UTF-8 names. */
export function isUtf8Name (name: string): boolean {
  return UTF8_CHARSETS.has(name.toLowerCase())
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

/**
 * A body's bytes as text, refusing what is not UTF-8 (Fastify's own string decoding would
 * silently turn invalid bytes into U+FFFD). A UTF-8 BOM is dropped.
 */
export function decodeUtf8 (body: Buffer | string): string {
  if (typeof body === 'string') return body
  try {
    return utf8.decode(body)
  } catch {
    throw new BadRequestError('request body is not valid UTF-8')
  }
}

/** The 415 for a body in a type the route does not read. */
export function unsupportedMediaType (contentType: string | undefined, accepted: string = ACCEPTED_MEDIA_TYPES): Error {
  const type = mediaTypeOf(contentType)
  return new UnsupportedMediaTypeError(type === undefined
    ? `a request body needs a Content-Type: ${accepted}`
    : `unsupported media type ${quote(type)}: send ${accepted}`)
}

const Q_VALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/
const CANDIDATES = [JSON_MEDIA_TYPE, ...XML_MEDIA_TYPES] as const
type Candidate = typeof CANDIDATES[number]

/**
 * Picks json or xml from an Accept header by q-values. Only application/json,
 * application/xml and text/xml (and the wildcards that cover them) count; the most
 * specific range decides a type's q as RFC 9110 says. When Accept is absent, a
 * wildcard, names neither or rates both the same, the fallback wins.
 *
 * The ranking is written here rather than taken from negotiator: a tie in q must keep the
 * request's own format, and of XML's two names the more specific range must decide, while
 * negotiator breaks ties by specificity and header order and does not expose q-values.
 * The ranges themselves are read by content-type.
 */
export function negotiateFormat (accept: string | undefined, fallback: BodyFormat): BodyFormat {
  if (accept === undefined || accept.trim() === '') return fallback
  // per media type: [specificity, q] of the most specific range seen
  const best: Partial<Record<Candidate, [number, number]>> = {}
  for (let at = 0; at < accept.length;) {
    const range = parse(accept, { comma: true, start: at })
    at = range.index + 1
    const type = range.type
    if (type === '') continue
    const rawQ = range.parameters['q']
    if (rawQ !== undefined && !Q_VALUE.test(rawQ)) continue
    const q = rawQ === undefined ? 1 : Number(rawQ)
    const [main, sub] = type.split('/')
    for (const candidate of CANDIDATES) {
      let specificity = -1
      if (type === candidate) specificity = 2
      else if (sub === '*' && candidate.startsWith(`${main}/`)) specificity = 1
      else if (type === '*/*') specificity = 0
      if (specificity < 0) continue
      const seen = best[candidate]
      if (seen === undefined || specificity > seen[0] || (specificity === seen[0] && q > seen[1])) {
        best[candidate] = [specificity, q]
      }
    }
  }
  const qJson = best['application/json']?.[1] ?? 0
  // XML has two names: the more specific range decides (`application/xml;q=0, */*` refuses
  // XML even though */* covers text/xml), equally specific ones the higher q
  const a = best['application/xml']
  const b = best['text/xml']
  const xml = a === undefined ? b : b === undefined ? a : a[0] !== b[0] ? (a[0] > b[0] ? a : b) : (a[1] >= b[1] ? a : b)
  const qXml = xml?.[1] ?? 0
  if (qJson === qXml) return fallback
  return qXml > qJson ? 'xml' : 'json'
}

/**
 * The format an answer (an error included) goes out in: what Accept asks for, else the
 * format of the request's own Content-Type, else JSON. The declared type counts, not only
 * a parsed body: a body that failed to parse still tells which language the client speaks.
 * From headers alone, so it holds in any scope and before any hook has run.
 */
export function responseFormatOf (headers: IncomingHttpHeaders): BodyFormat {
  return negotiateFormat(headers.accept, formatOfContentType(headers['content-type']) ?? 'json')
}

/** Adds Accept to Vary: the answer's format depends on it. */
export function addVaryAccept (reply: FastifyReply): void {
  const vary = reply.getHeader('vary')
  const current = Array.isArray(vary) ? vary.join(', ') : vary === undefined ? '' : String(vary)
  if (/(^|,)\s*(accept|\*)\s*(,|$)/i.test(current)) return
  reply.header('vary', current === '' ? 'Accept' : `${current}, Accept`)
}
