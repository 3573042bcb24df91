/**
 * The content-type parsers of a scope of routes: the strict JSON reader in place of
 * Fastify's, and the XML reader. Plain functions a route plugin calls on its own
 * encapsulated scope, so that each route reads the formats it takes and no others.
 * Both read Buffers: Fastify's string decoding silently turns invalid bytes into U+FFFD.
 * Either way Fastify enforces the route's bodyLimit while reading.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { charsetOf, decodeUtf8, assertUtf8Charset, JSON_MEDIA_TYPE, XML_MEDIA_TYPES } from './media-types.js'
import { createJsonReader } from './json-reader.js'
import { createXmlReader } from './xml-reader.js'

type Read = (request: FastifyRequest, body: Buffer) => unknown

function addBufferParser (scope: FastifyInstance, types: string | string[], read: Read): void {
  scope.addContentTypeParser(types, { parseAs: 'buffer' }, (request, body, done) => {
    try {
      done(null, read(request, body as Buffer))
    } catch (err) {
      done(err as Error, undefined)
    }
  })
}

/** application/json through createJsonReader (strict UTF-8, bounded depth, no prototype keys). */
export function addJsonParser (scope: FastifyInstance, options: { maxDepth?: number } = {}): void {
  const read = createJsonReader(options)
  if (scope.hasContentTypeParser(JSON_MEDIA_TYPE)) scope.removeContentTypeParser(JSON_MEDIA_TYPE)
  addBufferParser(scope, JSON_MEDIA_TYPE, (request, body) => read(body, charsetOf(request.headers['content-type'])))
}

/** application/xml and text/xml through createXmlReader. */
export function addXmlParser (scope: FastifyInstance, options: { maxDepth?: number } = {}): void {
  const read = createXmlReader(options)
  addBufferParser(scope, [...XML_MEDIA_TYPES], (request, body) => {
    // before decoding: a Latin-1 body is a 415 naming its charset, not a UTF-8 error
    const charset = charsetOf(request.headers['content-type'])
    assertUtf8Charset(charset)
    return read(decodeUtf8(body), charset)
  })
}
