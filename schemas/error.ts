import Type, { type Static } from 'typebox'

/** The body of every 4xx/5xx answer, in JSON or (as <error>…</error>) in XML. */
export const ErrorSchema = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String()
})
export type ErrorBody = Static<typeof ErrorSchema>
