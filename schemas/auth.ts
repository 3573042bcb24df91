import Type, { type Static } from 'typebox'

export const LoginBodySchema = Type.Object({
  username: Type.String({ minLength: 1, maxLength: 50 }),
  passwordHash: Type.String({ pattern: '^[0-9a-fA-F]{64}$', description: 'lowercase hex SHA-256 of the UTF-8 password' })
})
export type LoginBody = Static<typeof LoginBodySchema>

/** RFC 6749 §5.1 */
export const TokenResponseSchema = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer()
})
export type TokenResponse = Static<typeof TokenResponseSchema>
