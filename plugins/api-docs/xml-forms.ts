/**
 * The XML side of the API documentation: the schema of a document as the service writes it
 * in XML (OpenAPI `xml` objects naming each element as plugins/content-negotiation/xml-writer
 * names it), and the XML text of an example, written by that same writer. A batch sent in XML
 * has a shape of its own (the brief's `<items><item>…<images><url>`), described here by hand.
 */
import { XMLBuilder } from 'fast-xml-parser'
import Type from 'typebox'
import { ITEM_TEXT_MAX, type Batch } from '../../schemas/batch.js'
import { singularOf, toXml } from '../content-negotiation/xml-writer.js'

type Schema = Record<string, unknown>

const isSchema = (value: unknown): value is Schema => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * `schema` annotated for XML: the root element is `root`, an array is a wrapper element
 * (named as its property) around one child element per entry, named as the writer names
 * it (`items` → `item`, `images` → `image` or `url`, else the singular).
 */
export function xmlSchemaOf (schema: object, root: string): Schema {
  return { ...annotate(schema as Schema, undefined), xml: { name: root } }
}

function annotate (schema: Schema, key: string | undefined): Schema {
  const out: Schema = { ...schema }
  if (isSchema(schema['properties'])) {
    out['properties'] = Object.fromEntries(Object.entries(schema['properties']).map(([name, property]) =>
      [name, isSchema(property) ? annotate(property, name) : property]))
  }
  for (const union of ['anyOf', 'oneOf', 'allOf'] as const) {
    const members = schema[union]
    if (Array.isArray(members)) out[union] = members.map((member: unknown) => isSchema(member) ? annotate(member, key) : member)
  }
  if (isSchema(schema['items'])) {
    const items = schema['items']
    // the writer names an entry by whether entries are objects: images of a record are `image`, of a batch `url`
    const child = singularOf(key ?? '', [items['type'] === 'object' ? {} : ''])
    out['items'] = { ...annotate(items, child), xml: { name: child } }
    out['xml'] = { wrapped: true }
  }
  return out
}

/** An example document as the service writes it in XML, under `root`. */
export function xmlExampleOf (example: unknown, root: string): string {
  return toXml(example, root)
}

const text = (minLength = 0) => Type.String({ minLength, maxLength: ITEM_TEXT_MAX })

/**
 * A batch in XML: `<items>` holding one `<item>` per product, each with its fields and an
 * `<images>` element holding one `<url>` per image. A single `<item>` or `<url>` is a list of one.
 */
export const XmlBatchSchema = Type.Object({
  item: Type.Array(Type.Object({
    name: text(1),
    manufacturer: Type.Optional(text()),
    brand: Type.Optional(text()),
    category: Type.Optional(text()),
    images: Type.Object({
      url: Type.Array(Type.String({ minLength: 1, xml: { name: 'url' } }), { minItems: 1 })
    })
  }, { xml: { name: 'item' } }), { minItems: 1 })
}, { xml: { name: 'items' } })

const batchBuilder = new XMLBuilder({ ignoreAttributes: true, processEntities: true, format: true, indentBy: '  ' })

/** A batch as the XML a client sends (the brief's form). */
export function xmlBatchOf (batch: Batch): string {
  const item = batch.items.map(({ images, ...fields }) => ({ ...fields, images: { url: images } }))
  return `<?xml version="1.0" encoding="UTF-8"?>\n${batchBuilder.build({ items: { item } }) as string}`
}
