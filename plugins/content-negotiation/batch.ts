/**
 * Batch bodies: every accepted shape (canonical JSON, the literal JSON mapping of the XML,
 * what the XML reader produced) reshaped into the canonical batch, which BatchSchema then
 * validates, and validation's findings worded as the 400s clients get.
 */
import type { FastifySchemaValidationError } from 'fastify'
import { Compile } from 'typebox/compile'
import { BatchSchema, type Batch } from '../../schemas/batch.js'
import { BadRequestError, PayloadTooLargeError } from '../../lib/errors.js'
import { clip, quote } from '../../lib/excerpt.js'
import { isDict, put, type Dict } from '../../lib/dict.js'

export interface BatchLimits {
  /** most items one batch may hold (MAX_ITEMS) */
  maxItems: number
  /** most image URLs one batch may hold, all items together (MAX_IMAGES) */
  maxImages: number
}

/**
 * A list in any accepted shape, as an array: a JSON array; the XML mapping's wrapper
 * `{ item: x | [x…] }` (or `{ url: … }`); an empty element ('' from `<items/>`) or
 * empty wrapper. Anything else comes back as undefined, for validation to name.
 */
function unwrapList (value: unknown, child: string, path: string): { list: unknown[], wrapped: boolean } | undefined {
  if (Array.isArray(value)) return { list: value, wrapped: false }
  if (value === '') return { list: [], wrapped: true }
  if (!isDict(value)) return undefined
  for (const key of Object.keys(value)) {
    if (key !== child) throw new BadRequestError(`${path}: unknown field ${quote(key)} (expected a list of <${child}>)`)
  }
  const inner = value[child]
  if (inner === undefined) return { list: [], wrapped: true }
  return { list: Array.isArray(inner) ? inner : [inner], wrapped: true }
}

const trimmed = (value: unknown): unknown => typeof value === 'string' ? value.trim() : value

/**
 * Turns any accepted body shape into the canonical batch shape, without validating it:
 * that is BatchSchema's job, after this. Item and image counts are checked here (413 naming
 * MAX_ITEMS / MAX_IMAGES) so a huge body fails before it is validated. Strings are trimmed;
 * URL syntax is left to the fetcher, which reports INVALID_URL per image. What cannot be
 * reshaped (items that are not a list, an item that is not an object) is passed on as it
 * is, for validation to name.
 */
export function reshapeBatch (body: unknown, limits: BatchLimits): unknown {
  if (!isDict(body)) throw new BadRequestError('body: must be an object with an "items" list')
  if (body['items'] === undefined) {
    const found = Object.keys(body)
    throw new BadRequestError(found.length === 0
      ? 'items: at least one item is required'
      : `body: expected "items" (the root element <items> in XML), found ${found.slice(0, 3).map((k) => quote(k)).join(', ')}`)
  }
  const items = unwrapList(body['items'], 'item', 'items')

  const candidate: Dict = {}
  for (const key of Object.keys(body)) put(candidate, key, body[key])
  if (items === undefined) return candidate
  if (items.list.length > limits.maxItems) {
    throw new PayloadTooLargeError(`too many items: ${items.list.length} > MAX_ITEMS (${limits.maxItems})`)
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
    throw new PayloadTooLargeError(`too many image URLs: ${images} > MAX_IMAGES (${limits.maxImages})`)
  }
  put(candidate, 'items', outItems)
  return candidate
}

function describePath (pointer: string): string {
  let out = ''
  for (const raw of pointer.split('/').slice(1)) {
    const segment = clip(raw.replace(/~1/g, '/').replace(/~0/g, '~'), 100)
    out += /^\d+$/.test(segment) ? `[${segment}]` : (out === '' ? segment : `.${segment}`)
  }
  return out
}

const join = (path: string, field: string): string => path === '' ? field : `${path}.${field}`

/** One finding of typebox's compiled check, as Fastify passes it to a schemaErrorFormatter. */
type SchemaError = Pick<FastifySchemaValidationError, 'keyword' | 'schemaPath' | 'instancePath' | 'params' | 'message'>

/** A validation finding as the client reads it: `items[3].images: at least one image URL is required`. */
export function describeError (error: SchemaError): string {
  const path = describePath(error.instancePath)
  const at = path === '' ? 'body' : path
  const params = error.params as Dict
  switch (error.keyword) {
    case 'required': {
      const missing = Array.isArray(params['requiredProperties']) ? String(params['requiredProperties'][0]) : '?'
      if (path === '' && missing === 'items') return 'items: at least one item is required'
      return `${join(path, missing)}: is required`
    }
    case 'additionalProperties': {
      const extra = Array.isArray(params['additionalProperties']) ? String(params['additionalProperties'][0]) : '?'
      return `${at}: unknown field ${quote(extra)}`
    }
    case 'boolean':
      // typebox reports `additionalProperties: false` as the extra property failing `false`
      if (error.schemaPath.endsWith('/additionalProperties')) {
        const cut = error.instancePath.lastIndexOf('/')
        const parent = describePath(error.instancePath.slice(0, cut))
        const field = error.instancePath.slice(cut + 1).replace(/~1/g, '/').replace(/~0/g, '~')
        return `${parent === '' ? 'body' : parent}: unknown field ${quote(field)}`
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
    case 'maxLength':
      return `${at}: must be at most ${String(params['limit'])} characters`
  }
  return `${at}: ${clip(error.message ?? 'is invalid')}`
}

/** The schemaErrorFormatter of a batch route: the first finding, worded by describeError. */
export function batchErrorFormatter (errors: FastifySchemaValidationError[]): Error {
  const [first] = errors
  return new BadRequestError(first === undefined ? 'body: invalid batch' : describeError(first))
}

// compiled once: Value.Check interprets the schema and takes ~300 ms on a 5000-item
// batch, the compiled check ~2 ms. A constant, not state: it holds nothing per request.
const batchValidator = Compile(BatchSchema)

/**
 * reshapeBatch, then BatchSchema, as one pure function (a route does the same in two
 * steps: a preValidation hook, then Fastify's validation with the route's schema).
 */
export function normalizeBatch (body: unknown, limits: BatchLimits): Batch {
  const candidate = reshapeBatch(body, limits)
  if (batchValidator.Check(candidate)) return candidate
  throw batchErrorFormatter(batchValidator.Errors(candidate) as unknown as FastifySchemaValidationError[])
}
