/**
 * Server-Sent Events, the wire format (HTML Living Standard, "Server-sent events"): an
 * event is `id:`, `event:` and one `data:` line per line of its data, then a blank line;
 * a line starting with `:` is a comment, which clients ignore (a keep-alive).
 *
 * Hand-written: the format is these few lines; the Fastify SSE plugins (@fastify/sse 0.x,
 * fastify-sse-v2) add their own reply decorators and connection handling that would have
 * to be kept apart from the service's, for no gain here.
 */

/** The largest event id a client may send back (ids are counts of a dump's outcomes). */
const MAX_EVENT_ID = 2 ** 31 - 1

/** One event, its data already serialised (any line breaks in it become separate data lines). */
export function formatEvent (id: number, event: string, data: string): string {
  const lines = data.split(/\r\n|\r|\n/).map((line) => `data: ${line}\n`).join('')
  return `id: ${id}\nevent: ${event}\n${lines}\n`
}

/** A comment line: keeps proxies from closing an idle stream, and clients ignore it. */
export const keepAlive = ': keep-alive\n\n'

/** Tells the client how long to wait before reconnecting, in ms. */
export const retryAfter = (ms: number): string => `retry: ${Math.round(ms)}\n\n`

/**
 * The id a client resumes after (the Last-Event-ID header its EventSource sends on a
 * reconnection): 0 without one, undefined when it is not an id such a stream sends (a whole
 * number, without sign or leading zeros, up to 2^31 - 1).
 */
export function lastEventIdOf (header: string | string[] | undefined): number | undefined {
  if (header === undefined) return 0
  if (Array.isArray(header)) return undefined
  const value = header.trim()
  if (value === '') return 0
  if (!/^(0|[1-9][0-9]{0,9})$/.test(value)) return undefined
  const id = Number(value)
  return id <= MAX_EVENT_ID ? id : undefined
}
