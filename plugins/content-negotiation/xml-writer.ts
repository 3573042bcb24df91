/**
 * Answers as XML: any plain document (a dump result, an error, the quota) under a root
 * element, with arrays as repeated child elements; and the hook that sends a scope's
 * answers that way when the client asks for XML.
 */
import { XMLBuilder } from 'fast-xml-parser'
import type { FastifyInstance, preSerializationHookHandler } from 'fastify'
import type { BodyFormat } from '../../schemas/batch.js'
import { put, type Dict } from '../../lib/dict.js'
import { CONTENT_TYPES, addVaryAccept, mediaTypeOf, responseFormatOf } from './media-types.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Root element of this route's XML answers ('result' unless set). */
    xmlRoot?: string
  }
}

export const DEFAULT_XML_ROOT = 'result'
const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'

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

/**
 * preSerialization: a document a route returns goes out as XML when the client asks for
 * XML (Accept, else its own Content-Type), under the route's `config.xmlRoot`.
 */
const xmlAnswers: preSerializationHookHandler<unknown> = (request, reply, payload, done) => {
  // only plain documents reach this hook (Fastify skips strings, Buffers and streams)
  if (payload === null || typeof payload !== 'object') return done(null, payload)
  const header = reply.getHeader('content-type')
  // a route that chose its own non-JSON type keeps it
  const type = mediaTypeOf(header === undefined ? undefined : String(header))
  if (type !== undefined && type !== 'application/json') return done(null, payload)
  addVaryAccept(reply)
  if (responseFormatOf(request.headers) === 'xml') {
    const root = request.routeOptions.config.xmlRoot ?? DEFAULT_XML_ROOT
    // returning a string here would be JSON-encoded again; a serializer is used as is
    reply.serializer((doc: unknown) => toXml(doc, root))
    reply.type(CONTENT_TYPES.xml)
  }
  done(null, payload)
}

/** Makes the routes of this (encapsulated) scope answer in XML to clients that ask for it. */
export function useXmlAnswers (scope: FastifyInstance): void {
  scope.addHook('preSerialization', xmlAnswers)
}
