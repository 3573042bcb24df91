/**
 * A Server-Sent Events reader for tests: a real HTTP request (fetch) whose body is parsed
 * by eventsource-parser, an implementation independent of the service's, event by event
 * as it arrives. A test that opens many streams at once passes its own `dispatcher` and
 * destroys it before the app closes: undici opens spare connections that never carry a
 * request, and a server's close waits for those until its headers timeout.
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import { fetch, type Dispatcher } from 'undici'

export interface StreamRead {
  status: number
  headers: { get: (name: string) => string | null }
  events: EventSourceMessage[]
  /** the raw text received (to check framing and keep-alives) */
  text: string
  /** 'ended' when the server ended the stream, 'stopped' when `until` stopped reading */
  how: 'ended' | 'stopped'
}

/**
 * GETs `url` and reads its events until the server ends the stream or `until` (called after
 * each event with all so far) returns true.
 */
export async function readEvents (url: string, headers: Record<string, string>, until?: (events: EventSourceMessage[]) => boolean, dispatcher?: Dispatcher): Promise<StreamRead> {
  const controller = new AbortController()
  const response = await fetch(url, { headers, signal: controller.signal, ...(dispatcher === undefined ? {} : { dispatcher }) })
  const events: EventSourceMessage[] = []
  let text = ''
  if (response.body === null || !(response.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    return { status: response.status, headers: response.headers, events, text: await response.text(), how: 'ended' }
  }
  let stop = false
  const parser = createParser({
    onEvent (event) {
      if (stop) return
      events.push(event)
      if (until?.(events) === true) stop = true
    }
  })
  const decoder = new TextDecoder()
  const reader = response.body.getReader()
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    const chunk = decoder.decode(value, { stream: true })
    text += chunk
    parser.feed(chunk)
    if (stop) {
      controller.abort()
      await reader.cancel().catch(() => {})
      return { status: response.status, headers: response.headers, events, text, how: 'stopped' }
    }
  }
  return { status: response.status, headers: response.headers, events, text, how: 'ended' }
}

/** The parsed JSON data of the events named `name`. */
export function dataOf (events: readonly EventSourceMessage[], name: string): any[] { // eslint-disable-line @typescript-eslint/no-explicit-any -- test data
  return events.filter((event) => event.event === name).map((event) => JSON.parse(event.data))
}
