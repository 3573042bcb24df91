import Type, { type Static } from 'typebox'

/** The two formats a batch comes in, and its answer and stored record go out in. */
export const BodyFormatSchema = Type.Union([Type.Literal('json'), Type.Literal('xml')])
export type BodyFormat = Static<typeof BodyFormatSchema>

/**
 * Longest name, manufacturer, brand or category. Each is repeated in the answer and the
 * stored record (in XML, where `'` and `"` become six characters each); longer text is no
 * product's and only makes the answer bigger. URLs are checked per image (8192 characters,
 * an INVALID_URL outcome), not here.
 */
export const ITEM_TEXT_MAX = 1000

const itemText = (minLength = 0) => Type.String({ minLength, maxLength: ITEM_TEXT_MAX })

/**
 * The canonical batch every accepted body becomes, whatever its format. XML, the
 * canonical JSON and the literal JSON mapping of the XML all normalise to this.
 */
export const ItemSchema = Type.Object({
  name: itemText(1),
  manufacturer: Type.Optional(itemText()),
  brand: Type.Optional(itemText()),
  category: Type.Optional(itemText()),
  images: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 })
}, { additionalProperties: false })

export const BatchSchema = Type.Object({
  items: Type.Array(ItemSchema, { minItems: 1 })
}, { additionalProperties: false })

export type Item = Static<typeof ItemSchema>
export type Batch = Static<typeof BatchSchema>
