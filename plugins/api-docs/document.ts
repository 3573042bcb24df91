/**
 * How a route's schema becomes its OpenAPI operation (the `transform` of @fastify/swagger).
 * The route schemas stay what validates and serialises; what only the documentation needs
 * is derived here, the same way for every route, so that a new route is documented as
 * soon as it has a schema:
 *
 * - security: a route whose hooks include the service's authenticate hook takes the Bearer
 *   token (and can answer 401); any other route is public;
 * - bodies and answers in JSON and in XML, each with its examples (schemas/examples.ts; the
 *   XML written by the service's own XML writer);
 * - every error the route can answer, from what it does: 400 for anything it validates,
 *   413 and 415 for a body, 401 when authenticated, 429 and the quota headers when under
 *   the quota, 503 when it sheds load, 500 always; a route adds its own (404, 422) to its
 *   response schema.
 */
import { STATUS_CODES } from 'node:http'
import type { RouteOptions } from 'fastify'
import { ErrorSchema } from '../../schemas/error.js'
import { LoginBodySchema, TokenResponseSchema } from '../../schemas/auth.js'
import { BatchSchema } from '../../schemas/batch.js'
import { DumpResultSchema } from '../../schemas/dump.js'
import { QuotaSchema } from '../../schemas/quota.js'
import {
  batchExample, dumpResultExample, errorExamples, loginExample, quotaExample, runningDumpExample, tokenExample
} from '../../schemas/examples.js'
import { DEFAULT_XML_ROOT } from '../content-negotiation/xml-writer.js'
import { XmlBatchSchema, xmlBatchOf, xmlExampleOf, xmlSchemaOf } from './xml-forms.js'

type Schema = Record<string, unknown>
type Examples = Record<string, unknown>

const JSON_TYPE = 'application/json'
const XML_TYPE = 'application/xml'
const XML_TYPES = [XML_TYPE, 'text/xml']

/** Examples of the service's schemas, by schema (the objects the routes use). */
const examplesOf = new Map<object, Examples>([
  [BatchSchema, { batch: batchExample }],
  [LoginBodySchema, { login: loginExample }],
  [TokenResponseSchema, { token: tokenExample }],
  [DumpResultSchema, { complete: dumpResultExample, running: runningDumpExample }],
  [QuotaSchema, { quota: quotaExample }]
])

/** Bodies whose XML form is not the mechanical one (a batch's root holds its items directly). */
const xmlBodyOf = new Map<object, { schema: Schema, examples: Examples }>([
  [BatchSchema, { schema: XmlBatchSchema as unknown as Schema, examples: { batch: xmlBatchOf(batchExample) } }]
])

/** Response schemas a route described (`describe`), to the schema they describe. */
const described = new WeakMap<object, object>()

export interface ResponseDoc {
  description: string
  /** response headers, by name: a schema each, with its own description */
  headers?: Record<string, Schema>
}

/**
 * A response schema with what the documentation says of it (a description, headers). The
 * copy serialises like `schema` (Fastify reads neither field) and keeps its examples.
 */
export function describe<T extends object> (schema: T, doc: ResponseDoc): T {
  const copy = { ...schema, ...doc }
  described.set(copy, described.get(schema) ?? schema)
  return copy
}

const base = (schema: object): object => described.get(schema) ?? schema

const ERROR_DESCRIPTIONS: Readonly<Record<number, string>> = {
  400: 'The request is invalid; the message names the field (with the item index) or header at fault.',
  401: 'No valid Bearer token: missing, malformed, expired, or issued before a later login of the same user.',
  404: 'Nothing of the caller\'s at this path.',
  413: 'The body is larger than BODY_LIMIT_BYTES, or holds more than MAX_ITEMS items or MAX_IMAGES image URLs; the message names the limit.',
  415: 'The body is in a media type (or charset) the route does not read; the message names what it reads.',
  422: 'The request is well-formed but cannot be carried out; the message says why.',
  429: 'Too many requests; Retry-After says in how many seconds to try again.',
  500: 'The service failed; the failure is in its log.',
  503: 'The service cannot answer right now: it is shedding load (event-loop delay or heap past its limit; Retry-After is sent), or its database is unavailable. Try again later.'
}

const QUOTA_REFUSED = 'The plan\'s quota for the rolling hour is used up; nothing was admitted or processed. Retry-After says when the next slot frees.'

const header = (description: string, schema: Schema = { type: 'string' }): Schema => ({ ...schema, description })

export const QUOTA_HEADERS: Readonly<Record<string, Schema>> = {
  'RateLimit-Limit': header('dumps the caller\'s plan admits per rolling hour', { type: 'integer' }),
  'RateLimit-Remaining': header('dumps the caller may still start in the current window', { type: 'integer' }),
  'RateLimit-Reset': header('seconds until the oldest counted dump leaves the window', { type: 'integer' })
}
const RETRY_AFTER = header('seconds to wait before trying again', { type: 'integer' })

/** The security schemes of the routes; named for the service, so that a host's document can hold them beside its own. */
export const BEARER = 'imageDumpBearer'
export const BASIC = 'imageDumpBasic'
export const METRICS_BEARER = 'imageDumpMetrics'
export const SECURITY_SCHEMES: Readonly<Record<string, { type: 'http', scheme: string, bearerFormat?: string, description: string }>> = {
  [BEARER]: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'a token from POST /v1/auth/token' },
  [BASIC]: { type: 'http', scheme: 'basic', description: 'username and passwordHash (hex SHA-256 of the password), for POST /v1/auth/token only' },
  [METRICS_BEARER]: { type: 'http', scheme: 'bearer', description: 'METRICS_TOKEN, for GET /metrics when it is set' }
}

/** Adds the service's security schemes to a document that lacks them (a host's, documenting the service's routes too). */
export function addSecuritySchemes (openapiObject: { components?: { securitySchemes?: Record<string, unknown> } }): void {
  openapiObject.components ??= {}
  openapiObject.components.securitySchemes ??= {}
  for (const [name, scheme] of Object.entries(SECURITY_SCHEMES)) openapiObject.components.securitySchemes[name] ??= scheme
}

export interface DocumentContext {
  /** the hook that authenticates a route (imageDumpAuth.authenticate) */
  authenticate: unknown
  /** the hook that admits a dump under the quota (quota.enforce) */
  enforceQuota: unknown
  /** whether a route sheds load when the service is under pressure */
  shedsLoad: (route: RouteOptions) => boolean
}

function hooksOf (route: RouteOptions): unknown[] {
  return [route.onRequest, route.preParsing, route.preValidation, route.preHandler].flat().filter((hook) => hook !== undefined)
}

/** The media of a JSON-schema body or answer: JSON, and its XML form when the route speaks XML. */
function mediaOf (schema: Schema, xml: { root: string, types: readonly string[] } | undefined): Record<string, Schema> {
  const plain = base(schema)
  const examples = examplesOf.get(plain)
  const { description: _description, headers: _headers, ...content } = schema
  const media: Record<string, Schema> = { [JSON_TYPE]: { schema: content, ...(examples === undefined ? {} : { examples: wrap(examples) }) } }
  if (xml === undefined) return media
  const own = xmlBodyOf.get(plain)
  const xmlSchema = own?.schema ?? xmlSchemaOf(content, xml.root)
  const xmlExamples = own?.examples ?? (examples === undefined
    ? undefined
    : Object.fromEntries(Object.entries(examples).map(([name, value]) => [name, xmlExampleOf(value, xml.root)])))
  for (const type of xml.types) media[type] = { schema: xmlSchema, ...(xmlExamples === undefined ? {} : { examples: wrap(xmlExamples) }) }
  return media
}

/** A media object's schema, holding the media's examples as its own `examples` list. */
function inlineExamples (media: Schema): Schema {
  const examples = media['examples'] as Record<string, { value: unknown }> | undefined
  const schema = media['schema'] as Schema
  return examples === undefined ? schema : { ...schema, examples: Object.values(examples).map((example) => example.value) }
}

const wrap = (examples: Examples): Record<string, { value: unknown }> =>
  Object.fromEntries(Object.entries(examples).map(([name, value]) => [name, { value }]))

function errorResponse (status: number, declared: Schema | undefined, headers: Record<string, Schema>): Schema {
  const example = errorExamples[status] ?? { statusCode: status, error: STATUS_CODES[status] ?? 'Error', message: STATUS_CODES[status] ?? 'Error' }
  return {
    description: (declared?.['description'] as string | undefined) ?? ERROR_DESCRIPTIONS[status] ?? STATUS_CODES[status] ?? 'Error',
    ...(Object.keys(headers).length === 0 ? {} : { headers }),
    content: {
      [JSON_TYPE]: { schema: ErrorSchema, examples: { error: { value: example } } },
      [XML_TYPE]: { schema: xmlSchemaOf(ErrorSchema, 'error'), examples: { error: { value: xmlExampleOf(example, 'error') } } }
    }
  }
}

/**
 * The documentation schema of a route: what @fastify/swagger turns into its operation.
 * A route says in its schema what it consumes (`consumes`, JSON unless given) and, for an
 * answer that is not a JSON document (image bytes, text), its media (`content`).
 */
export function documentRoute (route: RouteOptions, context: DocumentContext): Schema {
  const schema = (route.schema ?? {}) as Schema
  if (schema['hide'] === true) return schema
  const { consumes, produces: _produces, response, body, ...rest } = schema
  const doc: Schema = { ...rest }
  const hooks = hooksOf(route)
  const authenticated = hooks.includes(context.authenticate)
  const underQuota = hooks.includes(context.enforceQuota)
  const root = route.config?.xmlRoot ?? DEFAULT_XML_ROOT
  doc['security'] = authenticated ? [{ [BEARER]: [] }] : (schema['security'] ?? [])

  if (body !== undefined) {
    const types = (consumes as string[] | undefined) ?? [JSON_TYPE]
    const xmlTypes = types.filter((type) => XML_TYPES.includes(type))
    const media = mediaOf(body as Schema, xmlTypes.length > 0 ? { root, types: xmlTypes } : undefined)
    // a login's form fields are its JSON fields
    for (const type of types) if (media[type] === undefined) media[type] = { ...media[JSON_TYPE] }
    // @fastify/swagger takes a body's examples from its schema's `examples` only
    doc['body'] = { content: Object.fromEntries(types.map((type) => [type, { schema: inlineExamples(media[type]!) }])) }
  }

  const responses: Record<string, Schema> = {}
  for (const [code, answer] of Object.entries((response ?? {}) as Record<string, Schema>)) {
    const status = Number(code)
    const headers: Record<string, Schema> = { ...(answer['headers'] as Record<string, Schema> | undefined) }
    if (underQuota && status >= 200 && status < 300) Object.assign(headers, QUOTA_HEADERS)
    if (status >= 400 && base(answer) === ErrorSchema) {
      if (status === 429 || status === 503) headers['Retry-After'] = RETRY_AFTER
      if (status === 429 && underQuota) Object.assign(headers, QUOTA_HEADERS)
      responses[code] = errorResponse(status, answer, headers)
    } else if (answer['content'] !== undefined) {
      // media given by the route: a JSON document's examples and XML form are added as for any other
      const content: Record<string, Schema> = {}
      for (const [type, media] of Object.entries(answer['content'] as Record<string, Schema>)) {
        const known = type === JSON_TYPE || XML_TYPES.includes(type)
        content[type] = known ? mediaOf(media['schema'] as Schema, type === JSON_TYPE ? undefined : { root, types: [type] })[type]! : media
      }
      responses[code] = { ...answer, ...(Object.keys(headers).length === 0 ? {} : { headers }), content }
    } else {
      responses[code] = {
        description: answer['description'] ?? STATUS_CODES[status] ?? 'OK',
        ...(Object.keys(headers).length === 0 ? {} : { headers }),
        content: mediaOf(answer, { root, types: [XML_TYPE] })
      }
    }
  }

  const errors = new Set<number>([500])
  if (body !== undefined || schema['params'] !== undefined || schema['querystring'] !== undefined || schema['headers'] !== undefined) errors.add(400)
  if (body !== undefined) { errors.add(413); errors.add(415) }
  if (authenticated) { errors.add(401); errors.add(503) }
  if (underQuota) errors.add(429)
  if (context.shedsLoad(route)) errors.add(503)
  for (const status of errors) {
    if (responses[status] !== undefined) continue
    const headers: Record<string, Schema> = {}
    if (status === 429 || status === 503) headers['Retry-After'] = RETRY_AFTER
    if (status === 429 && underQuota) Object.assign(headers, QUOTA_HEADERS)
    if (status === 401) headers['WWW-Authenticate'] = header('Bearer')
    responses[status] = errorResponse(status, status === 429 && underQuota ? { description: QUOTA_REFUSED } : undefined, headers)
  }
  doc['response'] = responses
  return doc
}
