import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser'
import type { EntityDecoderOptions, MatcherView } from 'fast-xml-parser'
import { Compile } from 'typebox/compile'
import { BatchSchema, type Batch, type BodyFormat } from '../schemas/batch.js'
import type { ErrorBody } from '../schemas/error.js'

export interface ContentNegotiationOptions {
  /** most items one batch may hold (MAX_ITEMS) */
  maxItems: number
  /** most image URLs one batch may hold, all items together (MAX_IMAGES) */
  maxImages: number
  /** deepest XML element nesting accepted; 32 unless set */
  maxDepth?: number
}

export interface BatchLimits {
  maxItems: number
  maxImages: number
}

export interface Negotiation {
  readonly limits: Readonly<BatchLimits & { maxDepth: number }>
  /** The request's body as a canonical Batch; throws an HttpError (400/413/415) otherwise. */
  parseBatch: (request: FastifyRequest) => Batch
  /** A preValidation route hook that sets `request.batch` or fails the request. */
  batchHook: (request: FastifyRequest) => Promise<void>
  serialize: (doc: unknown, format: BodyFormat, root?: string) => string
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The format of the body Fastify actually parsed: 'json' for application/json,
     * 'xml' for application/xml and text/xml, undefined when there is no body or it
     * came in some other type.
     */
    readonly bodyFormat: BodyFormat | undefined
    /** The format answers (errors included) are sent in, from Accept, else the request's own format, else json. */
    readonly responseFormat: BodyFormat
    /** Set by `fastify.negotiation.batchHook`; only routes using that hook have it. */
    batch: Batch
  }
  interface FastifyInstance {
    negotiation: Negotiation
  }
  interface FastifyContextConfig {
    /** Root element of this route's XML answers ('result' unless set). */
    xmlRoot?: string
  }
}

export const XML_MEDIA_TYPES = ['application/xml', 'text/xml'] as const
export const ACCEPTED_MEDIA_TYPES = 'application/json, application/xml or text/xml'
export const DEFAULT_XML_ROOT = 'result'
export const DEFAULT_MAX_DEPTH = 32
const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
const XML_CONTENT_TYPE = 'application/xml; charset=utf-8'
const JSON_CONTENT_TYPE = 'application/json; charset=utf-8'
const UTF8_CHARSETS: ReadonlySet<string> = new Set(['utf-8', 'utf8', 'us-ascii'])

/** An error whose statusCode Fastify and the error handler below keep. */
export class HttpError extends Error {
  override name = 'HttpError'
  readonly statusCode: number

  constructor (statusCode: number, message: string) {
    super(message)
    this.statusCode = statusCode
  }
}

// ---------------------------------------------------------------------------
// Media types and Accept
// ---------------------------------------------------------------------------

function mediaTypeOf (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  const type = contentType.split(';', 1)[0]!.trim().toLowerCase()
  return type === '' ? undefined : type
}

/** The format a Content-Type names, whether or not a body was parsed. */
export function formatOfContentType (contentType: string | undefined): BodyFormat | undefined {
  const type = mediaTypeOf(contentType)
  if (type === 'application/json') return 'json'
  if (type === 'application/xml' || type === 'text/xml') return 'xml'
  return undefined
}

/** The charset parameter of a Content-Type, lower-cased and unquoted. */
export function charsetOf (contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined
  for (const param of contentType.split(';').slice(1)) {
    const eq = param.indexOf('=')
    if (eq === -1) continue
    if (param.slice(0, eq).trim().toLowerCase() !== 'charset') continue
    return param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase()
  }
  return undefined
}

function assertUtf8Charset (charset: string | undefined): void {
  if (charset !== undefined && !UTF8_CHARSETS.has(charset)) {
    throw new HttpError(415, `unsupported charset "${charset}": send the body in UTF-8`)
  }
}

const Q_VALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/

/**
 * Picks json or xml from an Accept header by q-values. Only application/json,
 * application/xml and text/xml (and the wildcards that cover them) count; the most
 * specific range decides a type's q as RFC 9110 says. When Accept is absent, a
 * wildcard, names neither or rates both the same, the fallback wins.
 */
export function negotiateFormat (accept: string | undefined, fallback: BodyFormat): BodyFormat {
  if (accept === undefined || accept.trim() === '') return fallback
  // per media type: [specificity, q] of the most specific range seen
  const best: Record<string, [number, number]> = {}
  const candidates = ['application/json', 'application/xml', 'text/xml']
  for (const range of accept.split(',')) {
    const [rawType, ...params] = range.split(';')
    const type = rawType!.trim().toLowerCase()
    if (type === '') continue
    let q = 1
    let valid = true
    for (const param of params) {
      const [k, v] = param.split('=').map((s) => s.trim().toLowerCase())
      if (k === 'q') {
        if (v === undefined || !Q_VALUE.test(v)) valid = false
        else q = Number(v)
      }
    }
    if (!valid) continue
    const [main, sub] = type.split('/')
    for (const candidate of candidates) {
      const [cMain] = candidate.split('/')
      let specificity = -1
      if (type === candidate) specificity = 2
      else if (sub === '*' && main === cMain) specificity = 1
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

// ---------------------------------------------------------------------------
// XML reading
// ---------------------------------------------------------------------------

const PREDEFINED_ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }
const ENTITY_REFERENCE = /&(#x[0-9a-fA-F]+|#[0-9]+|[^\s&;]+);/g

function isXmlChar (code: number): boolean {
  return code === 0x9 || code === 0xA || code === 0xD ||
    (code >= 0x20 && code <= 0xD7FF) || (code >= 0xE000 && code <= 0xFFFD) || (code >= 0x10000 && code <= 0x10FFFF)
}

/**
 * The parser's own decoder leaves numeric references alone unless HTML entities are
 * switched on (which would add &nbsp; and friends). This one knows exactly XML's five
 * entities and character references, and refuses anything else: an unknown entity is a
 * well-formedness error, and nothing is ever taken from a DTD.
 */
function xmlEntityDecoder (): EntityDecoderOptions {
  return {
    setExternalEntities: () => {},
    addInputEntities: () => { throw new HttpError(400, 'DOCTYPE is not allowed') },
    reset: () => {},
    setXmlVersion: () => {},
    decode: (text: string) => text.includes('&')
      ? text.replace(ENTITY_REFERENCE, (whole, ref: string) => {
        if (ref[0] === '#') {
          const code = ref[1] === 'x' ? Number.parseInt(ref.slice(2), 16) : Number.parseInt(ref.slice(1), 10)
          if (!isXmlChar(code)) throw new HttpError(400, `malformed XML: invalid character reference "${whole}"`)
          return String.fromCodePoint(code)
        }
        const value = PREDEFINED_ENTITIES[ref]
        if (value === undefined) {
          throw new HttpError(400, `malformed XML: undefined entity "${whole}" (only &amp; &lt; &gt; &quot; &apos; and numeric references are allowed)`)
        }
        return value
      })
      : text
  }
}

function isMatcher (jPath: string | MatcherView): jPath is MatcherView {
  return typeof jPath !== 'string'
}

function pathIs (jPath: string | MatcherView, ...tags: string[]): boolean {
  if (!isMatcher(jPath) || jPath.getDepth() !== tags.length) return false
  const path = jPath.toArray()
  return tags.every((tag, i) => path[i] === tag)
}

/**
 * The first `<!…` in an XML text that is neither a comment nor a CDATA section — a DOCTYPE,
 * an `<!ENTITY …>` or anything else — as the word after `<!`, or undefined when there is
 * none. Comments and CDATA sections are skipped, so text that only mentions "<!DOCTYPE" is
 * not one; an unterminated one is left to the validator. The validator lets `<!ENTITY x>`
 * and `<!x>` through, and the parser reads them as unclosed elements that swallow what
 * follows, so they are refused here by name rather than reported as a missing field.
 */
export function firstDeclaration (text: string): string | undefined {
  for (let at = text.indexOf('<!'); at !== -1; at = text.indexOf('<!', at)) {
    const close = text.startsWith('<!--', at) ? '-->' : text.startsWith('<![CDATA[', at) ? ']]>' : undefined
    if (close === undefined) return /^<!([^\s>[]*)/.exec(text.slice(at, at + 64))![1]
    const end = text.indexOf(close, at + (close === '-->' ? 4 : 9))
    if (end === -1) return undefined
    at = end + close.length
  }
  return undefined
}

// XML 1.0 Char: a raw control character is a well-formedness error like its &#1; reference
const NOT_AN_XML_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u
const DECLARED_ENCODING = /^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([^"']*)["']/

/**
 * Builds the function that turns an XML text into the parser's plain object (the literal
 * mapping: `{ items: { item: [{ …, images: { url: […] } }] } }`). Throws an HttpError: 400
 * for a DOCTYPE, malformed XML, an undefined entity, a forbidden element name or nesting
 * past maxDepth; 415 for an encoding other than UTF-8. `charset` is the Content-Type's
 * charset parameter: when given it decides (RFC 7303), otherwise the XML declaration does.
 */
export function createXmlReader (options: { maxDepth?: number } = {}): (text: string, charset?: string) => unknown {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH
  const depthError = (): HttpError => new HttpError(400, `malformed XML: elements nested deeper than ${maxDepth} levels`)
  const parser = new XMLParser({
    ignoreAttributes: true,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    ignoreDeclaration: true,
    ignorePiTags: true,
    processEntities: true,
    htmlEntities: false,
    entityDecoder: xmlEntityDecoder(),
    // the parser's own limit is a backstop: updateTag below counts exactly, self-closing tags too
    maxNestedTags: maxDepth + 1,
    jPath: false,
    isArray: (_tag, jPath) => pathIs(jPath, 'items', 'item') || pathIs(jPath, 'items', 'item', 'images', 'url'),
    updateTag: (tag, jPath) => {
      if (isMatcher(jPath) && jPath.getDepth() > maxDepth) throw depthError()
      return tag
    }
  })

  return function readXml (text: string, charset?: string): unknown {
    if (text.trim() === '') throw new HttpError(400, 'request body is empty')
    const declaration = firstDeclaration(text)
    if (declaration?.toUpperCase() === 'DOCTYPE') throw new HttpError(400, 'DOCTYPE is not allowed')
    if (declaration !== undefined) {
      throw new HttpError(400, `malformed XML: "<!${declaration}" is not allowed (no DOCTYPE or declarations; only comments and CDATA sections start with <!)`)
    }
    if (charset === undefined) {
      const declared = DECLARED_ENCODING.exec(text)?.[1]
      if (declared !== undefined && !UTF8_CHARSETS.has(declared.toLowerCase())) {
        throw new HttpError(415, `unsupported XML encoding "${declared}": send the body in UTF-8`)
      }
    } else {
      assertUtf8Charset(charset)
    }
    const bad = NOT_AN_XML_CHAR.exec(text)
    if (bad !== null) {
      const before = text.slice(0, bad.index)
      const line = before.split('\n').length
      const column = bad.index - before.lastIndexOf('\n')
      const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
      throw new HttpError(400, `malformed XML at line ${line}, column ${column}: character U+${code} is not allowed in XML`)
    }
    // the parser itself is lenient (it closes what is left open); the validator is not
    const valid = XMLValidator.validate(text)
    if (valid !== true) {
      const { msg, line, col } = valid.err
      throw new HttpError(400, `malformed XML at line ${line}${col === undefined ? '' : `, column ${col}`}: ${msg}`)
    }
    try {
      return parser.parse(text)
    } catch (err) {
      if (err instanceof HttpError) throw err
      const message = err instanceof Error ? err.message : String(err)
      if (message.startsWith('[SECURITY]')) {
        const name = /"([^"]*)"/.exec(message)?.[1] ?? ''
        throw new HttpError(400, `malformed XML: element name "${name}" is not allowed`)
      }
      if (message.includes('Maximum nested tags')) throw depthError()
      throw new HttpError(400, `malformed XML: ${message}`)
    }
  }
}

// ---------------------------------------------------------------------------
// JSON reading
// ---------------------------------------------------------------------------

/** One container being walked: its own keys (undefined for an array) and the next child. */
interface JsonFrame { value: unknown[] | Dict, keys: string[] | undefined, next: number }

/** The path of the container on top of `frames`, as validation names it (`items[0].images`). */
function jsonPath (frames: readonly JsonFrame[]): string {
  const keys = frames.slice(0, -1).map((f) => f.keys === undefined ? f.next - 1 : f.keys[f.next - 1]!)
  let out = ''
  for (const key of keys) out += typeof key === 'number' ? `[${key}]` : (out === '' ? key : `.${key}`)
  // a key 10 000 levels down is named by where it starts and how deep it is
  if (out.length > 200) out = `${out.slice(0, 160)}… (${keys.length} levels down)`
  return out === '' ? 'body' : out
}

/**
 * Parses a JSON text like Fastify's own parser (which would otherwise do this): JSON.parse,
 * then an own "__proto__" key or a "constructor" object with a "prototype" anywhere is
 * refused. Unlike it, every 400 says what is wrong: the parser's message with its position,
 * or the path of the forbidden key. Duplicate keys keep the last value, as JSON.parse does.
 * The walk is iterative (depth is bounded only by the body size) and holds one frame per
 * level, not one entry per value.
 */
export function readJson (text: string): unknown {
  if (text.trim() === '') throw new HttpError(400, 'request body is empty')
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    throw new HttpError(400, `malformed JSON: ${err instanceof Error ? err.message : String(err)}`)
  }
  const frames: JsonFrame[] = []
  const enter = (value: unknown): void => {
    if (Array.isArray(value)) frames.push({ value, keys: undefined, next: 0 })
    else if (isDict(value)) frames.push({ value, keys: Object.keys(value), next: 0 })
  }
  enter(doc)
  while (frames.length > 0) {
    const frame = frames[frames.length - 1]!
    const { value, keys } = frame
    if (frame.next >= (keys === undefined ? (value as unknown[]).length : keys.length)) {
      frames.pop()
      continue
    }
    const i = frame.next++
    if (keys === undefined) {
      enter((value as unknown[])[i])
      continue
    }
    const key = keys[i]!
    const child = (value as Dict)[key]
    if (key === '__proto__' || (key === 'constructor' && isDict(child) && Object.hasOwn(child, 'prototype'))) {
      throw new HttpError(400, `${jsonPath(frames)}: the key "${key}" is not allowed`)
    }
    enter(child)
  }
  return doc
}

// ---------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------

type Dict = Record<string, unknown>

function isDict (value: unknown): value is Dict {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// defineProperty, not assignment: an own "__proto__" key (JSON.parse makes them) must
// stay a plain field that validation reports, never become the copy's prototype
function put (target: Dict, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

/**
 * A list in any accepted shape, as an array: a JSON array; the XML mapping's wrapper
 * `{ item: x | [x…] }` (or `{ url: … }`); an empty element ('' from `<items/>`) or
 * empty wrapper. Anything else comes back as is for validation to name.
 */
function unwrapList (value: unknown, child: string, path: string): { list: unknown[], wrapped: boolean } | undefined {
  if (Array.isArray(value)) return { list: value, wrapped: false }
  if (value === '') return { list: [], wrapped: true }
  if (!isDict(value)) return undefined
  for (const key of Object.keys(value)) {
    if (key !== child) throw new HttpError(400, `${path}: unknown field ${JSON.stringify(key)} (expected a list of <${child}>)`)
  }
  const inner = value[child]
  if (inner === undefined) return { list: [], wrapped: true }
  return { list: Array.isArray(inner) ? inner : [inner], wrapped: true }
}

const trimmed = (value: unknown): unknown => typeof value === 'string' ? value.trim() : value

function describePath (pointer: string): string {
  let out = ''
  for (const raw of pointer.split('/').slice(1)) {
    const segment = raw.replace(/~1/g, '/').replace(/~0/g, '~')
    out += /^\d+$/.test(segment) ? `[${segment}]` : (out === '' ? segment : `.${segment}`)
  }
  return out
}

const join = (path: string, field: string): string => path === '' ? field : `${path}.${field}`

interface SchemaError { keyword: string, schemaPath: string, instancePath: string, params: Dict, message: string }

function describeError (error: SchemaError): string {
  const path = describePath(error.instancePath)
  const at = path === '' ? 'body' : path
  const { params } = error
  switch (error.keyword) {
    case 'required': {
      const missing = Array.isArray(params['requiredProperties']) ? String(params['requiredProperties'][0]) : '?'
      if (path === '' && missing === 'items') return 'items: at least one item is required'
      return `${join(path, missing)}: is required`
    }
    case 'additionalProperties': {
      const extra = Array.isArray(params['additionalProperties']) ? String(params['additionalProperties'][0]) : '?'
      return `${at}: unknown field ${JSON.stringify(extra)}`
    }
    case 'boolean':
      // typebox reports `additionalProperties: false` as the extra property failing `false`
      if (error.schemaPath.endsWith('/additionalProperties')) {
        const cut = error.instancePath.lastIndexOf('/')
        const parent = describePath(error.instancePath.slice(0, cut))
        const field = error.instancePath.slice(cut + 1).replace(/~1/g, '/').replace(/~0/g, '~')
        return `${parent === '' ? 'body' : parent}: unknown field ${JSON.stringify(field)}`
      }
      break
    case 'type': {
      const expected = params['type'] === 'array' ? 'a list' : params['type'] === 'object' ? 'an object' : `a ${String(params['type'])}`
      return `${at}: must be ${expected}`
    }
    case 'minItems':
      if (path === 'items') return 'items: at least one item is required'
      if (path.endsWith('.images')) return `${path}: at least one image URL is required`
      return `${at}: must have at least ${String(params['limit'])} entries`
    case 'minLength':
      return `${at}: must not be empty`
  }
  return `${at}: ${error.message}`
}

/**
 * Turns any accepted body shape — canonical JSON, the literal JSON mapping of the XML, or
 * what the XML reader produced — into the canonical Batch. Item and image counts are
 * checked first (413 naming MAX_ITEMS / MAX_IMAGES) so a huge body fails before it is
 * validated; then BatchSchema decides (400 naming the item index and field). Strings are
 * trimmed; URL syntax is left to the fetcher, which reports INVALID_URL per image.
 */
export function normalizeBatch (body: unknown, limits: BatchLimits): Batch {
  if (!isDict(body)) throw new HttpError(400, 'body: must be an object with an "items" list')
  if (body['items'] === undefined) {
    const found = Object.keys(body)
    throw new HttpError(400, found.length === 0
      ? 'items: at least one item is required'
      : `body: expected "items" (the root element <items> in XML), found ${found.slice(0, 3).map((k) => JSON.stringify(k)).join(', ')}`)
  }
  const items = unwrapList(body['items'], 'item', 'items')

  const candidate: Dict = {}
  for (const key of Object.keys(body)) put(candidate, key, body[key])
  if (items === undefined) {
    // not a list: let validation say so
    return validated(candidate)
  }
  if (items.list.length > limits.maxItems) {
    throw new HttpError(413, `too many items: ${items.list.length} > MAX_ITEMS (${limits.maxItems})`)
  }

  let images = 0
  const outItems: unknown[] = new Array(items.list.length)
  for (let i = 0; i < items.list.length; i++) {
    let item = items.list[i]
    // `<item/>` is an empty element, not a string
    if (item === '' && items.wrapped) item = {}
    if (!isDict(item)) {
      outItems[i] = item
      continue
    }
    const out: Dict = {}
    for (const key of Object.keys(item)) {
      const value = item[key]
      if (key === 'images') {
        const list = unwrapList(value, 'url', `items[${i}].images`)
        if (list === undefined) {
          put(out, key, value)
        } else {
          images += list.list.length
          put(out, key, list.list.map(trimmed))
        }
      } else {
        put(out, key, trimmed(value))
      }
    }
    outItems[i] = out
  }
  if (images > limits.maxImages) {
    throw new HttpError(413, `too many image URLs: ${images} > MAX_IMAGES (${limits.maxImages})`)
  }
  put(candidate, 'items', outItems)
  return validated(candidate)
}

// compiled once: Value.Check interprets the schema and takes ~300 ms on a 5000-item
// batch, the compiled check ~2 ms. A constant, not state: it holds nothing per request.
const batchValidator = Compile(BatchSchema)

function validated (candidate: Dict): Batch {
  if (batchValidator.Check(candidate)) return candidate
  const [first] = batchValidator.Errors(candidate) as unknown as SchemaError[]
  throw new HttpError(400, first === undefined ? 'body: invalid batch' : describeError(first))
}

// ---------------------------------------------------------------------------
// XML writing
// ---------------------------------------------------------------------------

/** Name of the repeated child element an array under `key` becomes. */
export function singularOf (key: string, elements: readonly unknown[]): string {
  if (key === 'items') return 'item'
  if (key === 'images') return elements.some((e) => typeof e === 'object' && e !== null) ? 'image' : 'url'
  if (key.length > 1 && key.endsWith('s')) return key.slice(0, -1)
  return 'entry'
}

const NOT_XML_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu
const NOT_NAME_CHAR = /[^\p{L}\p{N}_.-]/gu

// keys come from documents, not from a schema: an invalid name would make invalid XML,
// and '#text' / '@_…' would be read by the builder as text or attributes
function elementName (key: string): string {
  let name = key.replace(NOT_NAME_CHAR, '_')
  if (!/^[\p{L}_]/u.test(name)) name = `_${name}`
  return name
}

function text (value: string): string {
  return value.replace(NOT_XML_CHAR, '\uFFFD')
}

function toBuilderTree (value: unknown, key: string): unknown {
  if (value !== null && typeof value === 'object' && typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    // same view as JSON.stringify (a Date becomes its ISO string)
    value = (value as { toJSON: () => unknown }).toJSON()
  }
  if (value === null || value === undefined) return ''
  if (Array.isArray(value)) {
    if (value.length === 0) return ''
    const child = singularOf(key, value)
    return { [child]: value.map((element) => toBuilderTree(element, child)) }
  }
  if (typeof value === 'object') {
    const out: Dict = {}
    for (const [k, v] of Object.entries(value)) {
      if (v === undefined || typeof v === 'function' || typeof v === 'symbol') continue
      put(out, elementName(k), toBuilderTree(v, k))
    }
    return out
  }
  return text(String(value))
}

const builder = new XMLBuilder({
  ignoreAttributes: true,
  processEntities: true,
  suppressEmptyNode: false,
  format: false
})

/**
 * Serialises a document as XML under `root`. Arrays become repeated child elements named
 * by singularOf (items → item, images → image or url, xs → x, else entry); undefined
 * fields are left out; numbers and booleans become text; characters XML cannot carry
 * become U+FFFD.
 */
export function toXml (doc: unknown, root: string = DEFAULT_XML_ROOT): string {
  const rootName = elementName(root)
  return XML_DECLARATION + (builder.build({ [rootName]: toBuilderTree(doc, rootName) }) as string)
}

export function serializeDocument (doc: unknown, format: BodyFormat, root: string = DEFAULT_XML_ROOT): string {
  return format === 'xml' ? toXml(doc, root) : JSON.stringify(doc)
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

export interface ErrorContext {
  /** the body limit that applied, for the 413 message */
  bodyLimit?: number
  /** the request's Content-Type, for the 415 message */
  contentType?: string
  /** the reply's status when the error arrived (a hook may have set it) */
  replyStatus?: number
}

function statusOf (error: unknown, replyStatus: number | undefined): number {
  if (typeof error === 'object' && error !== null) {
    const { statusCode, status } = error as { statusCode?: unknown, status?: unknown }
    if (typeof statusCode === 'number' && statusCode >= 400 && statusCode <= 599) return statusCode
    if (typeof status === 'number' && status >= 400 && status <= 599) return status
  }
  if (replyStatus !== undefined && replyStatus >= 400 && replyStatus <= 599) return replyStatus
  return 500
}

/**
 * The `{statusCode, error, message}` answer for an error. 4xx messages are the error's
 * own (Fastify's body-limit and media-type errors are reworded to name the setting and
 * what is accepted); 5xx get a generic message, the real one goes to the log only,
 * unless the error carries a `publicMessage`: words written for the client, without the
 * internals (database errors name hosts and ports) that its `message` may hold.
 */
export function buildErrorBody (error: unknown, context: ErrorContext = {}): ErrorBody {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
  let statusCode = statusOf(error, context.replyStatus)
  let message = error instanceof Error ? error.message : typeof error === 'string' ? error : ''

  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    statusCode = 413
    message = context.bodyLimit === undefined
      ? 'request body is larger than BODY_LIMIT_BYTES'
      : `request body is larger than BODY_LIMIT_BYTES (${context.bodyLimit} bytes)`
  } else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    statusCode = 415
    const type = mediaTypeOf(context.contentType)
    message = type === undefined
      ? `a request body needs a Content-Type: ${ACCEPTED_MEDIA_TYPES}`
      : `unsupported media type "${type}": send ${ACCEPTED_MEDIA_TYPES}`
  } else if (typeof error === 'object' && error !== null && Array.isArray((error as { validation?: unknown }).validation)) {
    // Fastify's schema validation; its message already names the field ("body/name must be string")
    statusCode = 400
  }

  if (statusCode >= 500) {
    const publicMessage = typeof error === 'object' && error !== null ? (error as { publicMessage?: unknown }).publicMessage : undefined
    message = typeof publicMessage === 'string' && publicMessage !== ''
      ? publicMessage
      : 'the server could not complete the request; the failure is in the service log'
  } else if (message === '') {
    message = STATUS_CODES[statusCode] ?? 'Error'
  }
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message }
}

function addVaryAccept (reply: FastifyReply): void {
  const vary = reply.getHeader('vary')
  const current = Array.isArray(vary) ? vary.join(', ') : vary === undefined ? '' : String(vary)
  if (/(^|,)\s*(accept|\*)\s*(,|$)/i.test(current)) return
  reply.header('vary', current === '' ? 'Accept' : `${current}, Accept`)
}

function sendErrorBody (request: FastifyRequest, reply: FastifyReply, body: ErrorBody): void {
  reply.code(body.statusCode)
  addVaryAccept(reply)
  // serialised here, so neither a route's response schema nor our preSerialization touches it
  if (request.responseFormat === 'xml') {
    reply.type(XML_CONTENT_TYPE).send(toXml(body, 'error'))
  } else {
    reply.type(JSON_CONTENT_TYPE).send(JSON.stringify(body))
  }
}

// ---------------------------------------------------------------------------
// The plugin
// ---------------------------------------------------------------------------

function positiveInteger (name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`content-negotiation: ${name} must be a positive integer, got ${String(value)}`)
  }
  return value
}

async function contentNegotiation (fastify: FastifyInstance, options: ContentNegotiationOptions): Promise<void> {
  const limits = Object.freeze({
    maxItems: positiveInteger('maxItems', options.maxItems),
    maxImages: positiveInteger('maxImages', options.maxImages),
    maxDepth: positiveInteger('maxDepth', options.maxDepth ?? DEFAULT_MAX_DEPTH)
  })
  // items > item > images > url: anything shallower cannot hold a batch
  if (limits.maxDepth < 4) throw new TypeError(`content-negotiation: maxDepth must be at least 4, got ${limits.maxDepth}`)
  const readXml = createXmlReader({ maxDepth: limits.maxDepth })
  const utf8 = new TextDecoder('utf-8', { fatal: true })

  // Buffer, not string: Fastify's string decoding silently turns invalid bytes into
  // U+FFFD. Either way Fastify enforces the route's / server's bodyLimit while reading.
  fastify.addContentTypeParser([...XML_MEDIA_TYPES], { parseAs: 'buffer' }, (request, body, done) => {
    try {
      // before decoding: a Latin-1 body is a 415 naming its charset, not a UTF-8 error
      const charset = charsetOf(request.headers['content-type'])
      assertUtf8Charset(charset)
      let text: string
      try {
        // strips a UTF-8 BOM too
        text = typeof body === 'string' ? body : utf8.decode(body)
      } catch {
        throw new HttpError(400, 'request body is not valid UTF-8')
      }
      done(null, readXml(text, charset))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  // JSON the same way: Fastify's default parser decodes leniently (invalid UTF-8 silently
  // became U+FFFD in what is processed and logged) and answered "not valid JSON" for a valid
  // document with a "__proto__" key. This one is strict about bytes and says what is wrong.
  fastify.removeContentTypeParser('application/json')
  fastify.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    try {
      assertUtf8Charset(charsetOf(request.headers['content-type']))
      let text: string
      try {
        // strips a UTF-8 BOM too
        text = typeof body === 'string' ? body : utf8.decode(body)
      } catch {
        throw new HttpError(400, 'request body is not valid UTF-8')
      }
      done(null, readJson(text))
    } catch (err) {
      done(err as Error, undefined)
    }
  })

  // getters rather than hook-set fields: an error raised before any hook of ours ran
  // (a 401 from an earlier onRequest, a parser 400) still gets the right format
  fastify.decorateRequest('bodyFormat', {
    getter (this: FastifyRequest): BodyFormat | undefined {
      return this.body === undefined ? undefined : formatOfContentType(this.headers['content-type'])
    }
  })
  fastify.decorateRequest('responseFormat', {
    getter (this: FastifyRequest): BodyFormat {
      // the declared type, not only the parsed one: a body that failed to parse still
      // tells which language the client speaks
      const fallback = this.bodyFormat ?? formatOfContentType(this.headers['content-type']) ?? 'json'
      return negotiateFormat(this.headers.accept, fallback)
    }
  })
  // null until batchHook runs; typed as Batch because only routes using the hook read it
  fastify.decorateRequest('batch', null as unknown as Batch)

  function parseBatch (request: FastifyRequest): Batch {
    const format = request.bodyFormat
    if (format === undefined) {
      const type = mediaTypeOf(request.headers['content-type'])
      if (request.body === undefined && (type === undefined || formatOfContentType(type) !== undefined)) {
        throw new HttpError(400, `request body is required (${ACCEPTED_MEDIA_TYPES})`)
      }
      throw new HttpError(415, type === undefined
        ? `a request body needs a Content-Type: ${ACCEPTED_MEDIA_TYPES}`
        : `unsupported media type "${type}": send ${ACCEPTED_MEDIA_TYPES}`)
    }
    // the XML and JSON parsers above checked this already; a JSON parser of an embedding app may not
    if (format === 'json') assertUtf8Charset(charsetOf(request.headers['content-type']))
    return normalizeBatch(request.body, limits)
  }

  const negotiation: Negotiation = {
    limits,
    parseBatch,
    batchHook: async (request) => {
      request.batch = parseBatch(request)
    },
    serialize: serializeDocument
  }
  fastify.decorate('negotiation', negotiation)

  fastify.addHook('preSerialization', (request, reply, payload, done) => {
    // only plain documents reach this hook (Fastify skips strings, Buffers and streams)
    if (payload === null || typeof payload !== 'object') return done(null, payload)
    const header = reply.getHeader('content-type')
    const type = mediaTypeOf(header === undefined ? undefined : String(header))
    // a route that chose its own non-JSON type keeps it
    if (type !== undefined && type !== 'application/json') return done(null, payload)
    addVaryAccept(reply)
    if (request.responseFormat === 'xml') {
      const root = request.routeOptions.config.xmlRoot ?? DEFAULT_XML_ROOT
      // returning a string here would be JSON-encoded again; a serializer is used as is
      reply.serializer((doc: unknown) => toXml(doc, root))
      reply.type(XML_CONTENT_TYPE)
    }
    done(null, payload)
  })

  fastify.setErrorHandler((error: FastifyError, request, reply) => {
    const body = buildErrorBody(error, {
      bodyLimit: request.routeOptions.bodyLimit,
      contentType: request.headers['content-type'],
      replyStatus: reply.statusCode
    })
    // what Fastify's default handler does with error.headers (e.g. @fastify/rate-limit)
    const headers = (error as { headers?: unknown }).headers
    if (isDict(headers)) {
      for (const [name, value] of Object.entries(headers)) {
        if (typeof value === 'string' || typeof value === 'number') reply.header(name, value)
      }
    }
    if (body.statusCode >= 500) {
      request.log.error({ err: error }, 'request failed')
    } else {
      request.log.info({ statusCode: body.statusCode, reason: body.message }, 'request refused')
    }
    sendErrorBody(request, reply, body)
  })

  fastify.setNotFoundHandler((request, reply) => {
    sendErrorBody(request, reply, {
      statusCode: 404,
      error: STATUS_CODES[404]!,
      message: `Route ${request.method}:${request.url} not found`
    })
  })
}

export { contentNegotiation }
export default fp(contentNegotiation, { name: 'content-negotiation', fastify: '5.x' })
