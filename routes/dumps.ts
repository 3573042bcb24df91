import type { FastifyInstance, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { BatchSchema } from '../schemas/batch.js'
import { DumpResultSchema } from '../schemas/dump.js'
import { DumpRequestHeadersSchema } from '../schemas/dump-headers.js'
import { batchErrorFormatter } from '../plugins/content-negotiation/batch.js'
import { CONTENT_TYPES, JSON_MEDIA_TYPE, XML_MEDIA_TYPES } from '../plugins/content-negotiation/media-types.js'
import { describe } from '../plugins/api-docs.js'
import { ErrorSchema } from '../schemas/error.js'
import { ConflictError, NotFoundError } from '../lib/errors.js'
import { sendImage } from './dump-image.js'
import { createDumpRuns } from './dump-runs.js'
import { createReplays, idempotencyKeyOf } from './idempotency.js'
import { dumpEventRoutes, type DumpEventRoutesOptions } from './dump-events.js'
import { dumpListRoutes } from './dump-list.js'
import { dumpRetryRoutes } from './dump-retry.js'
import { createDumpAdmission } from './dump-admission.js'

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })
const ImageParams = Type.Object({
  requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }),
  imageId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 })
})

const REPLAYED = { type: 'string', enum: ['true'], description: 'sent when the Idempotency-Key named a dump admitted before: this is that dump' }

/** A dump's record, sent as stored, in the format the dump came in (documentation only: bytes are not serialised). */
const STORED_RECORD: Record<string, unknown> = {
  description: 'The dump\'s record.',
  headers: { 'X-Dump-Complete': { type: 'string', enum: ['true', 'false'], description: 'whether every image has its outcome' } },
  content: { [JSON_MEDIA_TYPE]: { schema: DumpResultSchema }, [XML_MEDIA_TYPES[0]]: { schema: DumpResultSchema } }
}

export interface DumpRoutesOptions {
  /** the largest batch body read, in bytes (BODY_LIMIT_BYTES) */
  bodyLimit: number
  /** limits of GET /v1/dumps/{id}/events */
  events?: DumpEventRoutesOptions
}

declare module 'fastify' {
  interface FastifyRequest {
    /** the Idempotency-Key of a POST /v1/dumps, once its onRequest hook has read it; null when none was sent */
    idempotencyKey: string | null
  }
}

export default async function dumpRoutes (fastify: FastifyInstance, options: DumpRoutesOptions): Promise<void> {
  const negotiation = fastify.imageDumpNegotiation
  const runs = createDumpRuns(fastify)
  const admission = createDumpAdmission(fastify, runs, createReplays(fastify, runs))
  fastify.decorateRequest('idempotencyKey', null)
  const readKey = async (request: FastifyRequest): Promise<void> => { request.idempotencyKey = idempotencyKeyOf(request) ?? null }
  // this scope reads batches, in JSON or XML, and no other body
  negotiation.readBodies(fastify, ['json', 'xml'])
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.post('/v1/dumps', {
    // Order matters: who (401) and the Idempotency-Key (400) before the body is read, what
    // (400/413/415) before the quota, so that only authenticated, valid dumps are counted
    // and logged.
    onRequest: [fastify.imageDumpAuth.authenticate, readKey],
    bodyLimit: options.bodyLimit,
    // XML and the literal JSON mapping are reshaped into the canonical batch; the schema decides
    preValidation: negotiation.reshapeBatch,
    schema: {
      summary: 'Download the images of a batch',
      description: 'Downloads every image of every item and answers with the outcome of each, once all have one. ' +
        'With `Prefer: respond-async` it answers 202 at once and the dump runs on; follow it at `Location`. ' +
        'An `Idempotency-Key` makes a retried request answer with the same dump instead of starting another. ' +
        'Takes one slot of the caller\'s hourly quota (none for a replay).',
      tags: ['dumps'],
      consumes: ['application/json', ...XML_MEDIA_TYPES],
      body: BatchSchema,
      headers: DumpRequestHeadersSchema,
      response: {
        200: describe(DumpResultSchema, { description: 'Every image has its outcome.', headers: { 'Idempotent-Replayed': REPLAYED } }),
        202: describe(DumpResultSchema, {
          description: 'Admitted and running (Prefer: respond-async, or a replay of a dump still running): the record so far.',
          headers: {
            Location: { type: 'string', description: 'where the dump\'s record is: /v1/dumps/{requestId}' },
            'Preference-Applied': { type: 'string', description: 'respond-async' },
            'Idempotent-Replayed': REPLAYED
          }
        }),
        422: describe(ErrorSchema, { description: 'The Idempotency-Key was first sent with a different batch.' })
      }
    },
    validatorCompiler: TypeBoxValidatorCompiler,
    schemaErrorFormatter: batchErrorFormatter,
    preHandler: [
      async (request) => { admission.prepare(request, request.body, negotiation.bodyFormatOf(request)) },
      // admits the dump, or finds the one its Idempotency-Key already names (idempotentReplayOf)
      fastify.quota.enforce
    ],
    config: { xmlRoot: 'result' }
  }, async (request, reply) => await admission.answer(request, reply, request.body, negotiation.bodyFormatOf(request)))

  app.get('/v1/dumps/:requestId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'A dump\'s record',
      description: 'The record in the format the dump was sent in (JSON or XML). While the dump runs, its status and the status of every image ' +
        'without an outcome yet are PENDING, and `progress` counts the outcomes so far.',
      tags: ['dumps'],
      params: DumpParams,
      response: {
        200: STORED_RECORD,
        404: describe(ErrorSchema, { description: 'The caller has no dump with this id.' })
      }
    }
  }, async (request, reply) => {
    const record = await fastify.dumps.find(request.principal.userid, request.params.requestId)
    if (record === undefined) throw new NotFoundError('dump not found')
    reply.header('X-Dump-Complete', String(record.complete))
    return reply.type(CONTENT_TYPES[record.format]).send(record.data)
  })

  app.get('/v1/dumps/:requestId/images/:imageId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'A stored image',
      description: 'The bytes as downloaded, with the type they were recognised as. Sent with a strong ETag (the SHA-256 of the bytes) and ' +
        'Last-Modified (304 to a matching conditional request) and one byte range (206; several ranges get the whole image).',
      tags: ['dumps'],
      params: ImageParams,
      response: {
        200: { description: 'The image.', content: { 'image/*': { schema: { type: 'string', contentMediaType: 'image/*' } } } },
        404: describe(ErrorSchema, { description: 'The caller has no such dump, the image failed, or it is not stored yet.' })
      }
    }
  }, async (request, reply) => {
    const { requestId, imageId } = request.params
    const image = await fastify.dumps.image(request.principal.userid, requestId, imageId)
    if (image === undefined) throw new NotFoundError('image not found')
    reply.header('X-Content-Type-Options', 'nosniff')
    // any cache may keep it only for this user, and asks again (a 304 with the ETag) before reuse
    reply.header('Cache-Control', 'private, no-cache')
    // from the store, whichever backend: no URL maps onto it, and the key is always one
    // that dumps.image found for the caller's own dump
    return await sendImage(fastify.dumps.store, image, request, reply)
  })

  app.delete('/v1/dumps/:requestId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'Delete a dump',
      description: 'Removes the dump\'s record, its images\' outcomes, and the stored bytes no other dump of the caller references ' +
        '(identical bytes are stored once per user: bytes another dump also has stay). Afterwards the dump, its images and events are 404 ' +
        'and it is gone from the list. The dump\'s quota slot is not given back: the quota counts admissions, and a deleted dump was admitted.',
      tags: ['dumps'],
      params: DumpParams,
      response: {
        204: { description: 'Deleted.' },
        404: describe(ErrorSchema, { description: 'The caller has no dump with this id (or it was deleted already).' }),
        409: describe(ErrorSchema, { description: 'The dump is still running: delete it once it is complete.' })
      }
    }
  }, async (request, reply) => {
    const { requestId } = request.params
    const deleted = await fastify.dumps.deleteDump(request.principal.userid, requestId)
    if (deleted === 'not found') throw new NotFoundError('dump not found')
    if (deleted === 'running') throw new ConflictError(`dump ${requestId} is still running: delete it once it is complete (follow it at GET /v1/dumps/${requestId})`)
    return reply.code(204).send()
  })

  dumpListRoutes(fastify)
  dumpEventRoutes(fastify, options.events)
  dumpRetryRoutes(fastify, { admission, readKey })
}
