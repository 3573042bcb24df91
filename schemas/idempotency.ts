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
