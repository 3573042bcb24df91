/**
 * Content negotiation: which format a request's body is in and which one its answer goes
 * out in, and the means for a scope of routes to read batches in JSON or XML. The plugin
 * itself only decorates; parsers, hooks and error handlers are applied where they are
 * wanted, by the functions it hands out and those of ./content-negotiation/.
 */
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { BodyFormat } from '../schemas/batch.js'
import { BadRequestError } from '../lib/errors.js'
import { reshapeBatch, type BatchLimits } from './content-negotiation/batch.js'
import { addJsonParser, addXmlParser } from './content-negotiation/body-parsers.js'
import {
  ACCEPTED_MEDIA_TYPES, assertUtf8Charset, charsetOf, formatOfContentType, mediaTypeOf, responseFormatOf, unsupportedMediaType
} from './content-negotiation/media-types.js'
import { DEFAULT_MAX_DEPTH } from './content-negotiation/xml-reader.js'
import { serializeDocument } from './content-negotiation/xml-writer.js'
import { positiveInteger } from '../lib/option-checks.js'

export interface ContentNegotiationOptions extends BatchLimits {
  /** deepest XML element nesting accepted; 32 unless set */
  maxDepth?: number
}

/** The format of the body Fastify parsed, from the Content-Type; undefined when there is none. */
function bodyFormatOf (request: FastifyRequest): BodyFormat | undefined {
  return request.body === undefined ? undefined : formatOfContentType(request.headers['content-type'])
}

/** The parsed body of a batch request, or the 400/415 that says why there is none. */
function batchBodyOf (request: FastifyRequest): unknown {
  const contentType = request.headers['content-type']
  const format = bodyFormatOf(request)
  if (format === undefined) {
    const type = mediaTypeOf(contentType)
    if (request.body === undefined && (type === undefined || formatOfContentType(type) !== undefined)) {
      throw new BadRequestError(`request body is required (${ACCEPTED_MEDIA_TYPES})`)
    }
    throw unsupportedMediaType(contentType)
  }
  // our JSON parser checked this already; a JSON parser of another scope may not have
  if (format === 'json') assertUtf8Charset(charsetOf(contentType))
  return request.body
}

const OWNER = 'content-negotiation'

export function createNegotiation (options: ContentNegotiationOptions) {
  const limits = Object.freeze({
    maxItems: positiveInteger(OWNER, 'maxItems', options.maxItems),
    maxImages: positiveInteger(OWNER, 'maxImages', options.maxImages),
    maxDepth: positiveInteger(OWNER, 'maxDepth', options.maxDepth ?? DEFAULT_MAX_DEPTH)
  })
  // items > item > images > url: anything shallower cannot hold a batch
  if (limits.maxDepth < 4) throw new TypeError(`content-negotiation: maxDepth must be at least 4, got ${limits.maxDepth}`)

  return {
    limits,
    /**
     * Gives `scope` the content-type parsers of `formats`, the strict JSON reader replacing
     * Fastify's. Call it on a route plugin's own (encapsulated) scope.
     */
    readBodies (scope: FastifyInstance, formats: readonly BodyFormat[]): void {
      if (formats.includes('json')) addJsonParser(scope)
      if (formats.includes('xml')) addXmlParser(scope, { maxDepth: limits.maxDepth })
    },
    /**
     * preValidation hook of a batch route: the parsed body, reshaped into the canonical
     * batch for the route's body schema (BatchSchema) to validate; 400 without a body, 415
     * for a body in neither format, 413 past MAX_ITEMS / MAX_IMAGES.
     */
    async reshapeBatch (request: FastifyRequest): Promise<void> {
      request.body = reshapeBatch(batchBodyOf(request), limits)
    },
    /** The format a batch route's body came in (its reshapeBatch hook made sure there is one). */
    bodyFormatOf (request: FastifyRequest): BodyFormat {
      const format = bodyFormatOf(request)
      if (format === undefined) throw unsupportedMediaType(request.headers['content-type'])
      return format
    },
    serialize: serializeDocument
  }
}

export type Negotiation = ReturnType<typeof createNegotiation>

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
  }
  interface FastifyInstance {
    imageDumpNegotiation: Negotiation
  }
}

async function contentNegotiation (fastify: FastifyInstance, options: ContentNegotiationOptions): Promise<void> {
  // getters rather than hook-set fields: an error raised before any hook ran (a 401 from an
  // earlier onRequest, a parser 400) still has them right
  fastify.decorateRequest('bodyFormat', {
    getter (this: FastifyRequest): BodyFormat | undefined {
      return bodyFormatOf(this)
    }
  })
  fastify.decorateRequest('responseFormat', {
    getter (this: FastifyRequest): BodyFormat {
      return responseFormatOf(this.headers)
    }
  })
  fastify.decorate('imageDumpNegotiation', createNegotiation(options))
}

export default fp(contentNegotiation, { name: 'content-negotiation', fastify: '5.x' })
