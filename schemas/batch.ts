import Type, { type Static } from 'typebox'

/**
 * The canonical batch every accepted body becomes, whatever its format. XML, the
 * canonical JSON and the literal JSON mapping of the XML all normalise to this.
 */
export const ItemSchema = Type.Object({
  name: Type.String({ minLength: 1 }),
  manufacturer: Type.Optional(Type.String()),
  brand: Type.Optional(Type.String()),
  category: Type.Optional(Type.String()),
  images: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })
}, { additionalProperties: false })

export const BatchSchema = Type.Object({
  items: Type.Array(ItemSchema, { minItems: 1 })
}, { additionalProperties: false })

export type Item = Static<typeof ItemSchema>
export type Batch = Static<typeof BatchSchema>
export type BodyFormat = 'json' | 'xml'
