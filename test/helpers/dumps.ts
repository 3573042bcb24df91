import { readdir } from 'node:fs/promises'
import { join, relative } from 'node:path'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'

export interface TestItem {
  name: string
  manufacturer?: string
  brand?: string
  category?: string
  images: string[]
}

const escape = (text: string): string =>
  text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')

/** The brief's XML form of a batch. */
export function xmlBatch (items: readonly TestItem[]): string {
  const fields = (item: TestItem): string => (['name', 'manufacturer', 'brand', 'category'] as const)
    .filter((key) => item[key] !== undefined)
    .map((key) => `<${key}>${escape(item[key]!)}</${key}>`).join('')
  return `<?xml version="1.0" encoding="UTF-8"?>\n<items>\n${items.map((item) =>
    `  <item>${fields(item)}<images>${item.images.map((url) => `<url>${escape(url)}</url>`).join('')}</images></item>`).join('\n')}\n</items>\n`
}

/** The canonical JSON form. */
export function jsonBatch (items: readonly TestItem[]): string {
  return JSON.stringify({ items })
}

/** The literal JSON mapping of the XML form. */
export function literalJsonBatch (items: readonly TestItem[]): string {
  return JSON.stringify({ items: { item: items.map((item) => ({ ...item, images: { url: item.images } })) } })
}

export type Format = 'xml' | 'json' | 'literal'

export function batchBody (format: Format, items: readonly TestItem[]): { payload: string, contentType: string } {
  if (format === 'xml') return { payload: xmlBatch(items), contentType: 'application/xml' }
  return { payload: format === 'json' ? jsonBatch(items) : literalJsonBatch(items), contentType: 'application/json' }
}

export async function postDump (app: FastifyInstance, token: string, format: Format, items: readonly TestItem[], headers: Record<string, string> = {}): Promise<LightMyRequestResponse> {
  const { payload, contentType } = batchBody(format, items)
  return await app.inject({
    method: 'POST',
    url: '/v1/dumps',
    payload,
    headers: { authorization: `Bearer ${token}`, 'content-type': contentType, ...headers }
  })
}

/** Every file below a folder, as paths relative to it. */
export async function filesUnder (dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true })
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name))).sort()
}

export async function countRows (app: FastifyInstance): Promise<number> {
  const row = await app.persistence.db.selectFrom('requests').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow()
  return Number(row.n)
}

/**
 * The keys of the objects the recorded successes point at (identical bytes are stored once
 * per user, so several images, of one dump or of several, may share one), sorted; of one
 * dump, or of every dump with no `requestId`.
 */
export async function storedKeys (app: FastifyInstance, requestId?: number): Promise<string[]> {
  let query = app.persistence.db.selectFrom('dump_images').select('object_key').distinct()
    .where('status', '=', 'SUCCESS').where('object_key', 'is not', null)
  if (requestId !== undefined) query = query.where('request_id', '=', requestId)
  return (await query.execute()).map((row) => row.object_key!).sort()
}

/** The key of the object one image's recorded success points at. */
export async function storedKeyOf (app: FastifyInstance, requestId: number, imageId: number): Promise<string | undefined> {
  const row = await app.persistence.db.selectFrom('dump_images').select('object_key')
    .where('request_id', '=', requestId).where('image_id', '=', imageId).executeTakeFirst()
  return row?.object_key ?? undefined
}
