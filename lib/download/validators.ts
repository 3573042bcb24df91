/**
 * Validators (RFC 9110 §8.8): what an origin sends with a representation so that a later
 * request can ask whether it changed. An ETag is kept as sent, weak ones (`W/"…"`) too:
 * If-None-Match compares weakly, which is what a cache asking "may I keep mine?" needs. A
 * Last-Modified is kept as sent too, since an origin may compare If-Modified-Since as a
 * string. A value that is not well formed, or longer than a stored row keeps, is no
 * validator: the URL is then downloaded as if it had none.
 */
export interface Validators {
  etag?: string
  lastModified?: string
}

const ETAG = /^(?:W\/)?"[\x21\x23-\x7e]*"$/
const MAX_ETAG = 256
const MAX_DATE = 64

const single = (value: string | string[] | undefined): string | undefined => Array.isArray(value) ? undefined : value?.trim()

/** The validators of a response's headers; an empty object when it has none worth keeping. */
export function validatorsOf (headers: Record<string, string | string[] | undefined>): Validators {
  const etag = single(headers.etag)
  const lastModified = single(headers['last-modified'])
  return {
    ...(etag !== undefined && etag.length <= MAX_ETAG && ETAG.test(etag) ? { etag } : {}),
    ...(lastModified !== undefined && lastModified.length <= MAX_DATE && /^[\x20-\x7e]+$/.test(lastModified) && Number.isFinite(Date.parse(lastModified)) ? { lastModified } : {})
  }
}

export const hasValidators = (validators: Validators | undefined): validators is Validators =>
  validators?.etag !== undefined || validators?.lastModified !== undefined

/** The request headers that make a request conditional on `validators`. */
export function conditionalHeaders (validators: Validators): Record<string, string> {
  return {
    ...(validators.etag === undefined ? {} : { 'if-none-match': validators.etag }),
    ...(validators.lastModified === undefined ? {} : { 'if-modified-since': validators.lastModified })
  }
}

/** Bytes a user stored before for a URL, with the validators they came with: what a 304 reuses. */
export interface StoredBefore {
  validators: Validators
  /** the key of the user's object that holds the bytes (stored_objects) */
  objectKey: string
  /** what the earlier outcome said of the bytes */
  contentType: string
  bytes: number
  sha256: string
  width?: number
  height?: number
}
