/**
 * JSON bodies, read more strictly than Fastify's own parser: UTF-8 or nothing, nesting
 * bounded before JSON.parse runs, no key that could reach a prototype, and every 400 says
 * what is wrong.
 */
import { BadRequestError } from '../../lib/errors.js'
import { clip, EXCERPT_CHARS } from '../../lib/excerpt.js'
import { isDict, type Dict } from '../../lib/dict.js'
import { assertUtf8Charset, decodeUtf8 } from './media-types.js'

/** Deepest nesting of arrays and objects a JSON body may have. */
export const DEFAULT_JSON_MAX_DEPTH = 64

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/**
 * Whether a JSON text nests arrays and objects deeper than `maxDepth`, counted over its
 * bytes, brackets inside strings excepted. JSON.parse holds every level of a document at
 * once: 16 MiB of `[` cost it about a gigabyte and seconds of blocked event loop before
 * it failed. This loop costs nothing but the time to stop at the first level too many.
 * Bytes, not characters: in UTF-8 no byte of a multi-byte character is an ASCII bracket,
 * quote or backslash.
 */
export function nestsDeeperThan (bytes: Uint8Array, maxDepth: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]
    if (inString) {
      if (byte === BACKSLASH) i++
      else if (byte === QUOTE) inString = false
    } else if (byte === QUOTE) {
      inString = true
    } else if (byte === OPEN_ARRAY || byte === OPEN_OBJECT) {
      if (++depth > maxDepth) return true
    } else if ((byte === CLOSE_ARRAY || byte === CLOSE_OBJECT) && depth > 0) {
      // a stray closer makes the text malformed; it must not pay for deeper nesting after it
      depth--
    }
  }
  return false
}

/** One container being walked: its own keys (undefined for an array) and the next child. */
interface JsonFrame { value: unknown[] | Dict, keys: string[] | undefined, next: number }

/** The path of the container on top of `frames`, as validation names it (`items[0].images`). */
function jsonPath (frames: readonly JsonFrame[]): string {
  const keys = frames.slice(0, -1).map((f) => f.keys === undefined ? f.next - 1 : f.keys[f.next - 1]!)
  let out = ''
  for (const key of keys) {
    out += typeof key === 'number' ? `[${key}]` : `${out === '' ? '' : '.'}${clip(key, EXCERPT_CHARS)}`
  }
  // a key many levels down is named by where it starts and how deep it is
  if (out.length > 200) out = `${out.slice(0, 160)}… (${keys.length} levels down)`
  return out === '' ? 'body' : out
}

/**
 * Parses a JSON text like Fastify's own parser (which would otherwise do this): JSON.parse,
 * then an own "__proto__" key or a "constructor" object with a "prototype" anywhere is
 * refused. Unlike it, every 400 says what is wrong: the parser's message with its position,
 * or the path of the forbidden key. Duplicate keys keep the last value, as JSON.parse does.
 * The walk is iterative and holds one frame per level, not one entry per value.
 */
export function readJson (text: string): unknown {
  if (text.trim() === '') throw new BadRequestError('request body is empty')
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (err) {
    // V8 quotes a few characters of the input, as they are
    throw new BadRequestError(`malformed JSON: ${clip(err instanceof Error ? err.message : String(err))}`)
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
      throw new BadRequestError(`${jsonPath(frames)}: the key "${key}" is not allowed`)
    }
    enter(child)
  }
  return doc
}

/**
 * The reader a JSON content-type parser uses: the charset (415 unless UTF-8), the nesting
 * depth (400 past maxDepth, before anything is decoded or parsed), strict UTF-8, readJson.
 */
export function createJsonReader (options: { maxDepth?: number } = {}): (body: Buffer | string, charset?: string) => unknown {
  const maxDepth = options.maxDepth ?? DEFAULT_JSON_MAX_DEPTH
  return function readJsonBody (body, charset) {
    // before decoding: a Latin-1 body is a 415 naming its charset, not a UTF-8 error
    assertUtf8Charset(charset)
    if (nestsDeeperThan(typeof body === 'string' ? Buffer.from(body) : body, maxDepth)) {
      throw new BadRequestError(`JSON nested deeper than ${maxDepth} levels (arrays and objects)`)
    }
    return readJson(decodeUtf8(body))
  }
}
