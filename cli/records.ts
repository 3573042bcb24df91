/**
 * A dump's record and events as the CLI reads them. GET /v1/dumps/{id} and its events
 * stream speak the format the dump was sent in, so a feed pushed as XML comes back as XML:
 * read with the service's own reader, its text turned into the schema's numbers.
 */
import { XMLParser } from 'fast-xml-parser'
import { Value } from 'typebox/value'
import { readRecord } from '../plugins/dumps/records.js'
import { DumpResultSchema, ProgressSchema, type DumpResult, type Progress } from '../schemas/dump.js'

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

/** The counts a `progress` event carries: JSON, or `<progress>…</progress>` for an XML dump. */
export function parseProgress (data: string): Progress {
  const parsed = data.trimStart().startsWith('<') ? (parser.parse(data) as { progress?: unknown }).progress : JSON.parse(data) as unknown
  const progress = Value.Convert(ProgressSchema, parsed)
  if (!Value.Check(ProgressSchema, progress)) throw new Error('a progress event without its counts')
  return progress
}
