/**
 * The contract's rule for object keys (contract.ts), in one place for every backend: keys
 * are '/'-separated segments of [A-Za-z0-9._-], none empty, "." or "..". A key prefix (for
 * list and sweepTemporary) is '' or such a key's beginning.
 */
import { UnsafeObjectKeyError } from './contract.js'

const MAX_KEY_LENGTH = 1024
const SEGMENT = /^[A-Za-z0-9._-]+$/

function checkSegments (segments: readonly string[], what: string, text: string): void {
  for (const segment of segments) {
    if (!SEGMENT.test(segment) || segment === '.' || segment === '..') {
      throw new UnsafeObjectKeyError(`${what} ${JSON.stringify(text)} is not one the server makes`)
    }
  }
}

/** Throws an UnsafeObjectKeyError unless `key` is a key the server could have made. */
export function checkObjectKey (key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY_LENGTH) {
    throw new UnsafeObjectKeyError(`object key ${JSON.stringify(key)} is not one the server makes`)
  }
  checkSegments(key.split('/'), 'object key', key)
}

/** Throws an UnsafeObjectKeyError unless `prefix` is '' or the beginning of a safe key ("1/42/", "1/4"). */
export function checkObjectPrefix (prefix: unknown): asserts prefix is string {
  if (typeof prefix !== 'string' || prefix.length > MAX_KEY_LENGTH) {
    throw new UnsafeObjectKeyError(`object key prefix ${JSON.stringify(prefix)} is not one the server makes`)
  }
  if (prefix === '') return
  const segments = prefix.split('/')
  // a trailing '/' leaves an empty last segment: the whole folder
  if (segments.at(-1) === '') segments.pop()
  else if (/^\.\.?$/.test(segments.at(-1)!)) throw new UnsafeObjectKeyError(`object key prefix ${JSON.stringify(prefix)} is not one the server makes`)
  checkSegments(segments, 'object key prefix', prefix)
}
