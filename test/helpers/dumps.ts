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
