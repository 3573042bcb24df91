/**
 * GET /v1/dumps/{requestId}/events: a dump's progress as Server-Sent Events (see
 * plugins/dumps/events.ts for the events and their ids). Any instance serves any dump's
 * stream, running or complete; `Last-Event-ID` resumes after an event.
 *
 * A stream ends after its `complete` event; a reconnection after it (Last-Event-ID of the
 * `complete` event) gets 204, which tells an EventSource to stop reconnecting. Each user
 * may hold `maxStreamsPerUser` streams open on one instance (429 beyond), since every open
 * stream of a running dump reads the database every poll.
 */
import { Readable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { describe } from '../plugins/api-docs.js'
import { ErrorSchema } from '../schemas/error.js'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { BadRequestError, NotFoundError, createServiceError } from '../lib/errors.js'
import { formatEvent, keepAlive, lastEventIdOf, retryAfter } from '../lib/sse.js'
import { serializeDocument } from '../plugins/content-negotiation/xml-writer.js'
import type { EventSource } from '../plugins/dumps/events.js'

/** The stream is written as it goes, not serialised: these only document it. */
const EVENTS_ANSWERS: Record<string, unknown> = {
  200: { description: 'The event stream.', content: { 'text/event-stream': { schema: { type: 'string' } } } },
  204: { description: 'Nothing more to send: the stream ended with its complete event before Last-Event-ID.' },
  404: describe(ErrorSchema, { description: 'The caller has no dump with this id.' })
}

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })

export class TooManyStreamsError extends createServiceError('TOO_MANY_STREAMS', 429,
  'too many event streams are open for this user; close one, or follow a dump with GET /v1/dumps/{requestId}') {}

export interface DumpEventRoutesOptions {
  /** event streams one user may have open on this instance at once [8] */
  maxStreamsPerUser?: number
  /** a comment is sent after this long without an event, in ms [15000] */
  keepAliveMs?: number
}

export function dumpEventRoutes (fastify: FastifyInstance, options: DumpEventRoutesOptions = {}): void {
  const maxStreamsPerUser = options.maxStreamsPerUser ?? 8
  const keepAliveMs = options.keepAliveMs ?? 15_000
  const open = new Map<number, number>()
  // a stream never ends on its own while its dump runs: the app's close ends them all, so
  // that it does not wait for the clients to go
  const closing = new AbortController()
  fastify.addHook('preClose', async () => { closing.abort() })

  fastify.withTypeProvider<TypeBoxTypeProvider>().get('/v1/dumps/:requestId/events', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'Follow a dump as Server-Sent Events',
      description: '`progress` events, one `image` event per outcome, and a last `complete` event with the final status. ' +
        'Every event has an `id`; `Last-Event-ID` resumes after it.',
      tags: ['dumps'],
      params: DumpParams,
      response: EVENTS_ANSWERS
    }
  }, async (request, reply) => {
    const after = lastEventIdOf(request.headers['last-event-id'])
    if (after === undefined) throw new BadRequestError('Last-Event-ID must be the id of an event of this stream (a whole number)')
    const { userid } = request.principal
    const events = fastify.dumps.events
    const opened = await events.open(userid, request.params.requestId, after)
    if (opened === 'not found') throw new NotFoundError('dump not found')
    if (opened === 'unknown event id') throw new BadRequestError(`Last-Event-ID ${after} is not an event this dump's stream has sent`)
    if (opened === 'ended') return reply.code(204).send()
    const source: EventSource = opened

    const streams = open.get(userid) ?? 0
    if (streams >= maxStreamsPerUser) {
      reply.header('retry-after', '5')
      throw new TooManyStreamsError(`too many event streams are open for this user (${streams}); close one, or follow the dump with GET /v1/dumps/{requestId}`)
    }
    open.set(userid, streams + 1)
    const release = (): void => {
      const left = (open.get(userid) ?? 1) - 1
      if (left > 0) open.set(userid, left)
      else open.delete(userid)
    }

    // ends the stream when the client goes away or the app closes
    const gone = new AbortController()
    reply.raw.once('close', () => { gone.abort() })
    const signal = AbortSignal.any([gone.signal, closing.signal])
    const { format } = source
    async function * body (): AsyncGenerator<string> {
      try {
        yield retryAfter(2000)
        let quietSince = performance.now()
        for await (const event of events.stream(userid, source, signal)) {
          if (event !== undefined) {
            quietSince = performance.now()
            yield formatEvent(event.id, event.event, serializeDocument(event.data, format, event.event))
          } else if (performance.now() - quietSince >= keepAliveMs) {
            quietSince = performance.now()
            yield keepAlive
          }
        }
      } catch (error) {
        // the database could not be read: the stream ends, and the client resumes it
        request.log.warn({ err: error, requestId: source.requestId }, 'an events stream ended early')
      } finally {
        release()
      }
    }

    reply.header('cache-control', 'no-cache')
    // nginx and others buffer a response unless told not to: events must go out as they come
    reply.header('x-accel-buffering', 'no')
    return reply.type('text/event-stream; charset=utf-8').send(Readable.from(body(), { objectMode: false }))
  })
}
