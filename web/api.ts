/**
 * The page's client for the service's API: the token, JSON or XML answers read as one shape,
 * and the events stream. No library: the page needs only fetch, a stream reader and
 * DOMParser, all built into the browser. The stream is read with fetch because a browser's
 * EventSource cannot send the Authorization header, and the token never goes in a URL.
 */

const TOKEN_KEY = 'image-dump-token'

/** The token, kept for this tab only (sessionStorage): it survives a reload, not the tab. */
export const token = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (value: string): void => { sessionStorage.setItem(TOKEN_KEY, value) },
  clear: (): void => { sessionStorage.removeItem(TOKEN_KEY) }
}

export class ApiError extends Error {
  constructor (readonly status: number, message: string) { super(message) }
}

/** A path of the API, relative to the page, so that a service mounted under a prefix works. */
export function apiUrl (path: string): string {
  return new URL(path.replace(/^\//, ''), document.baseURI).href
}

function authorised (init: RequestInit = {}): RequestInit {
  const headers = new Headers(init.headers)
  const current = token.get()
  if (current !== null) headers.set('authorization', `Bearer ${current}`)
  return { ...init, headers }
}

/** fetch with the token; a non-2xx answer is thrown as an ApiError carrying the service's message. */
export async function call (url: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(url, authorised(init))
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response))
  return response
}

async function errorMessage (response: Response): Promise<string> {
  const text = await response.text()
  const data = readDocument(text, response.headers.get('content-type') ?? '')
  const message = typeof data === 'object' && data !== null ? (data as Record<string, unknown>)['message'] : undefined
  return `${response.status} ${typeof message === 'string' ? message : response.statusText}`
}

/** The hex SHA-256 of the password, which is all the service is sent. */
export async function sha256Hex (text: string): Promise<string> {
  if (crypto.subtle === undefined) throw new Error('signing in needs a secure page (HTTPS, or localhost)')
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text))
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, '0')).join('')
}

const NUMERIC = new Set(['requestId', 'retryOf', 'itemId', 'imageId', 'bytes', 'width', 'height', 'httpStatus', 'total', 'done', 'succeeded', 'failed',
  'limit', 'used', 'remaining', 'resetSeconds', 'windowSeconds'])
const LISTS = new Set(['items', 'images'])

/** An XML element as the JSON the service would have sent for it. */
function fromXml (element: Element): unknown {
  if (LISTS.has(element.tagName)) return [...element.children].map(fromXml)
  if (element.children.length === 0) {
    const text = element.textContent ?? ''
    return NUMERIC.has(element.tagName) && /^\d+$/.test(text) ? Number(text) : text
  }
  const object: Record<string, unknown> = {}
  for (const child of element.children) object[child.tagName] = fromXml(child)
  return object
}

/** A JSON or XML document (a dump sent in XML is recorded and streamed in XML) read as JSON. */
export function readDocument (text: string, contentType: string): unknown {
  try {
    if (/xml/.test(contentType) || text.trimStart().startsWith('<')) {
      const root = new DOMParser().parseFromString(text, 'application/xml').documentElement
      return root.tagName === 'parsererror' ? undefined : fromXml(root)
    }
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

export async function readJson<T> (response: Response): Promise<T> {
  return readDocument(await response.text(), response.headers.get('content-type') ?? '') as T
}

export interface ServerEvent { id: string, event: string, data: string }

/**
 * Reads a text/event-stream body (the WHATWG format: fields up to a blank line; `data` lines
 * joined; comments ignored) and hands each event on.
 */
async function readEvents (body: ReadableStream<Uint8Array>, onEvent: (event: ServerEvent) => void): Promise<void> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ''
  let event: ServerEvent = { id: '', event: 'message', data: '' }
  let data: string[] = []
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    const lines = buffer.split(/\r\n|\r|\n/)
    buffer = lines.pop() ?? ''
    for (const line of lines) {
      if (line === '') {
        if (data.length > 0) onEvent({ ...event, data: data.join('\n') })
        event = { id: event.id, event: 'message', data: '' }
        data = []
        continue
      }
      if (line.startsWith(':')) continue
      const colon = line.indexOf(':')
      const field = colon === -1 ? line : line.slice(0, colon)
      const value = colon === -1 ? '' : line.slice(colon + 1).replace(/^ /, '')
      if (field === 'data') data.push(value)
      else if (field === 'event') event.event = value
      else if (field === 'id') event.id = value
    }
  }
}

/**
 * Follows a dump's events until its `complete` event, reconnecting from the last event id
 * when the stream breaks (a restarting instance ends its streams). Stops when `signal` aborts.
 */
export async function followEvents (path: string, onEvent: (event: ServerEvent) => void, signal: AbortSignal): Promise<void> {
  let lastId: string | undefined
  let complete = false
  for (let attempt = 0; !complete && !signal.aborted; attempt++) {
    const headers: Record<string, string> = { accept: 'text/event-stream' }
    if (lastId !== undefined) headers['last-event-id'] = lastId
    try {
      const response = await call(apiUrl(path), { headers, signal })
      if (response.status === 204 || response.body === null) return
      attempt = 0
      await readEvents(response.body, (event) => {
        lastId = event.id
        if (event.event === 'complete') complete = true
        onEvent(event)
      })
    } catch (error) {
      if (signal.aborted || (error instanceof ApiError && error.status < 500 && error.status !== 429) || attempt >= 4) throw error
    }
    if (!complete && !signal.aborted) await new Promise((resolve) => setTimeout(resolve, 1000 * (attempt + 1)))
  }
}
