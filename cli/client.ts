/**
 * The CLI's HTTP client: the service at IMAGE_DUMP_URL, spoken to in JSON. Every failure
 * is a CliError carrying the exit code scripts read: 2 for an answer that refuses (4xx),
 * 3 when the service cannot be reached or cannot answer (connection errors, 5xx).
 */
import type { DumpResult } from '../schemas/dump.js'
import type { Quota } from '../schemas/quota.js'
import type { TokenResponse } from '../schemas/auth.js'
import { parseRecord } from './records.js'

export const EXIT = { OK: 0, SOME_FAILED: 1, REFUSED: 2, UNREACHABLE: 3 } as const

export class CliError extends Error {
  /** `status`: the HTTP status of the answer that refused, when there was one */
  constructor (message: string, readonly exitCode: number, readonly status?: number) {
    super(message)
  }
}

export interface Answer<T> {
  status: number
  headers: Headers
  body: T
}

/** The words of an error answer: its `message`, else its status line. */
async function refusalOf (response: Response): Promise<string> {
  const text = await response.text().catch(() => '')
  try {
    const message = (JSON.parse(text) as { message?: unknown }).message
    if (typeof message === 'string') return message
  } catch {
    // not JSON: the status says it
  }
  return `${response.status} ${response.statusText}`
}

export function createClient (server: string, token?: string) {
  const base = new URL(server.endsWith('/') ? server : `${server}/`)

  async function request (method: string, path: string, init: { body?: string, headers?: Record<string, string> } = {}): Promise<Response> {
    const url = new URL(path.replace(/^\//, ''), base)
    const headers: Record<string, string> = { accept: 'application/json', ...init.headers }
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`
    let response: Response
    try {
      response = await fetch(url, { method, headers, body: init.body })
    } catch (error) {
      const cause = (error as { cause?: { code?: string, message?: string } }).cause
      throw new CliError(`cannot reach ${base.origin}: ${cause?.code ?? cause?.message ?? (error as Error).message}`, EXIT.UNREACHABLE)
    }
    if (response.status >= 500) throw new CliError(`${base.origin} could not answer: ${await refusalOf(response)}`, EXIT.UNREACHABLE)
    if (response.status >= 400) {
      const message = await refusalOf(response)
      const hint = response.status === 401 && token !== undefined ? ' (run `image-dump login` again)' : ''
      const retry = response.headers.get('retry-after')
      throw new CliError(`refused (${response.status}): ${message}${hint}${retry === null ? '' : ` [retry after ${retry} s]`}`, EXIT.REFUSED, response.status)
    }
    return response
  }

  async function json<T> (method: string, path: string, init: { body?: string, headers?: Record<string, string> } = {}): Promise<Answer<T>> {
    const response = await request(method, path, init)
    return { status: response.status, headers: response.headers, body: await response.json() as T }
  }

  return {
    server: base.toString(),

    login: async (username: string, passwordHash: string) =>
      (await json<TokenResponse>('POST', '/v1/auth/token', { body: JSON.stringify({ username, passwordHash }), headers: { 'content-type': 'application/json' } })).body,

    /** Admits a dump; answered 202 at once (Prefer: respond-async), its record so far. */
    push: async (body: string, contentType: string, idempotencyKey: string) =>
      await json<DumpResult>('POST', '/v1/dumps', {
        body,
        headers: { 'content-type': contentType, prefer: 'respond-async', 'idempotency-key': idempotencyKey }
      }),

    dump: async (requestId: number): Promise<DumpResult> => {
      const response = await request('GET', `/v1/dumps/${requestId}`)
      return parseRecord(await response.text(), response.headers.get('content-type'))
    },

    /**
     * A dump's events stream (Server-Sent Events), resuming after `lastEventId` when given;
     * the answer as it arrives. 204 once the dump is complete.
     */
    events: async (requestId: number, lastEventId?: string): Promise<Response> =>
      await request('GET', `/v1/dumps/${requestId}/events`, {
        headers: { accept: 'text/event-stream', ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) }
      }),

    quota: async () => (await json<Quota>('GET', '/v1/quota')).body,

    /** A stored image's bytes. */
    image: async (requestId: number, imageId: number): Promise<Uint8Array> =>
      new Uint8Array(await (await request('GET', `/v1/dumps/${requestId}/images/${imageId}`, { headers: { accept: '*/*' } })).arrayBuffer())
  }
}

export type Client = ReturnType<typeof createClient>
