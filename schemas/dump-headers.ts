import Type, { type Static } from 'typebox'

/**
 * The Idempotency-Key request header (the IETF httpapi idempotency-key draft): 1 to 255
 * visible ASCII characters, taken as sent (the draft's quoted form `"…"` is a key like any
 * other: a client repeats its own bytes).
 */
export const IdempotencyKeySchema = Type.String({
  minLength: 1,
  maxLength: 255,
  pattern: '^[\\x21-\\x7E]+$',
  description: 'the same key with the same batch within 24 h answers with the same dump'
})
export type IdempotencyKey = Static<typeof IdempotencyKeySchema>

/**
 * The request headers POST /v1/dumps reads besides Authorization and Content-Type. The key
 * is checked in onRequest, before the body is read, so that its 400 can quote it; Prefer
 * is never refused (RFC 7240: a server ignores what it does not follow).
 */
export const DumpRequestHeadersSchema = Type.Object({
  'idempotency-key': Type.Optional(IdempotencyKeySchema),
  prefer: Type.Optional(Type.String({ description: 'RFC 7240; respond-async answers 202 at admission' }))
})
export type DumpRequestHeaders = Static<typeof DumpRequestHeadersSchema>
