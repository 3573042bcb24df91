/**
 * A dump's record as the CLI reads it. GET /v1/dumps/{id} sends the record in the format
 * the dump was sent in, so a feed pushed as XML comes back as XML: read with the service's
 * own reader, its text turned into the schema's numbers.
 */
import { XMLParser } from 'fast-xml-parser'
import { Value } from 'typebox/value'
import { readRecord } from '../plugins/dumps/records.js'
import { DumpResultSchema, type DumpResult } from '../schemas/dump.js'

const parser = new XMLParser({ parseTagValue: false, processEntities: true, htmlEntities: false, ignoreAttributes: true, ignoreDeclaration: true })

export function parseRecord (text: string, contentType: string | null): DumpResult {
  if (!/xml/i.test(contentType ?? '')) return JSON.parse(text) as DumpResult
  const { result } = parser.parse(text) as { result?: { requestId?: string, status?: string, progress?: unknown } }
  const items = readRecord(Buffer.from(text), 'xml')
  return Value.Convert(DumpResultSchema, {
    requestId: result?.requestId,
    status: result?.status,
    ...(typeof result?.progress === 'object' ? { progress: result.progress } : {}),
    items
  }) as DumpResult
}
