import Type, { type Static } from 'typebox'

export const QuotaSchema = Type.Object({
  plan: Type.String(),
  limit: Type.Integer({ description: 'dumps admitted per window' }),
  used: Type.Integer({ description: 'dumps admitted in the last window' }),
  remaining: Type.Integer(),
  resetSeconds: Type.Integer({ description: 'seconds until the next slot frees; 0 when one is free now' }),
  windowSeconds: Type.Integer()
})
export type Quota = Static<typeof QuotaSchema>
