/**
 * How `push` follows a running dump: through its events stream (GET /v1/dumps/{id}/events),
 * so each progress event is drawn as the service records it, with one request for the
 * whole dump. A dropped stream is resumed with Last-Event-ID, so nothing is counted twice.
 * Where the stream cannot be had (a service without it answers 404; one that has reached
 * its limit of streams for the user answers 429), the record is asked for every `pollMs`
 * instead.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import type { Progress } from '../schemas/dump.js'
import { CliError, EXIT, type Client } from './client.js'
import { parseProgress } from './records.js'

// consecutive attempts that bring no event before the stream is given up on
const MAX_RECONNECTS = 5
const BACKOFF_MS = 250
const MAX_BACKOFF_MS = 4_000

export interface FollowOptions {
  /** how often the record is asked for when there is no events stream, in ms */
  pollMs: number
  /** called with the dump's counts each time they change */
  onProgress: (progress: Progress) => void
}

/** Why following the stream stopped: the dump is complete, or the stream is not to be had. */
type StreamEnd = 'complete' | 'unavailable'

/** Reads one connection's events until the stream ends; `onEvent` sees each one. */
async function readStream (response: Response, onEvent: (event: EventSourceMessage) => boolean): Promise<boolean> {
  if (response.body === null) return false
  let complete = false
  const parser = createParser({ onEvent: (event) => { if (onEvent(event)) complete = true } })
  const decoder = new TextDecoder()
  for await (const chunk of response.body) {
    parser.feed(decoder.decode(chunk, { stream: true }))
    if (complete) break
  }
  return complete
}

/** An event that cannot be read: connecting again would only read it again. */
class UnreadableEventError extends CliError {}

/** A progress event's counts; a service that sends something else is not one this command can follow. */
function progressOf (data: string, requestId: number): Progress {
  try {
    return parseProgress(data)
  } catch (error) {
    throw new UnreadableEventError(`the events stream of dump ${requestId} sent what is not progress: ${(error as Error).message}`, EXIT.UNREACHABLE)
  }
}

async function followStream (client: Client, requestId: number, onProgress: (progress: Progress) => void): Promise<StreamEnd> {
  let lastEventId: string | undefined
  let failures = 0
  for (;;) {
    let seen = false
    let lost: unknown
    try {
      const response = await client.events(requestId, lastEventId)
      // 204: the dump completed before (or while) this connection was made
      if (response.status === 204) return 'complete'
      const complete = await readStream(response, (event) => {
        seen = true
        if (event.id !== undefined) lastEventId = event.id
        if (event.event === 'progress') onProgress(progressOf(event.data, requestId))
        return event.event === 'complete'
      })
      if (complete) return 'complete'
    } catch (error) {
      if (error instanceof CliError && (error.status === 404 || error.status === 429)) return 'unavailable'
      // another refusal (401: the token expired meanwhile) is the answer, and so is what cannot be read
      if (error instanceof UnreadableEventError || (error instanceof CliError && error.exitCode === EXIT.REFUSED)) throw error
      // unreachable, or the connection dropped mid-stream: resumed below
      lost = error
    }
    // an attempt that brought events starts the count again
    failures = seen ? 0 : failures + 1
    if (failures >= MAX_RECONNECTS) {
      if (lost instanceof CliError) throw lost
      throw new CliError(`lost the events stream of dump ${requestId}${lost instanceof Error ? `: ${lost.message}` : ''}`, EXIT.UNREACHABLE)
    }
    await sleep(Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** failures))
  }
}

/** Resolves once the dump is complete, having told `onProgress` its counts along the way. */
export async function followDump (client: Client, requestId: number, options: FollowOptions): Promise<void> {
  if (await followStream(client, requestId, options.onProgress) === 'complete') return
  for (;;) {
    const record = await client.dump(requestId)
    if (record.status !== 'PENDING') return
    if (record.progress !== undefined) options.onProgress(record.progress)
    await sleep(options.pollMs)
  }
}
