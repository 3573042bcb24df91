import fastifyStatic from '@fastify/static'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { BatchSchema } from '../schemas/batch.js'
import { DumpResultSchema } from '../schemas/dump.js'
import { DumpRequestHeadersSchema } from '../schemas/dump-headers.js'
import { batchErrorFormatter } from '../plugins/content-negotiation/batch.js'
import { CONTENT_TYPES } from '../plugins/content-negotiation/media-types.js'
import { NotFoundError } from '../lib/errors.js'
import { prefersRespondAsync } from '../lib/prefer.js'
import { numberBatch } from '../plugins/dumps.js'
import { sendAccepted } from './dump-answers.js'
import { createDumpRuns } from './dump-runs.js'
import { batchDigest, createReplays, idempotencyKeyOf } from './idempotency.js'
import { dumpEventRoutes, type DumpEventRoutesOptions } from './dump-events.js'
import { dumpListRoutes } from './dump-list.js'
import { dumpRetryRoutes } from './dump-retry.js'

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })
const ImageParams = Type.Object({
  requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }),
  imageId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 })
})

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
  const replays = createReplays(fastify, runs)
  fastify.decorateRequest('idempotencyKey', null)
  const readKey = async (request: FastifyRequest): Promise<void> => { request.idempotencyKey = idempotencyKeyOf(request) ?? null }
  // this scope reads batches, in JSON or XML, and no other body
  negotiation.readBodies(fastify, ['json', 'xml'])
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  // Stored images are sent with an ETag and Last-Modified (304 on a match) and honour
  // Range (206). Only `reply.sendFile`, in this scope: no route of its own (serve: false),
  // so no URL maps onto the storage folder and nothing lists it; the file is always one
  // that dumps.image found for the caller's own dump.
  await fastify.register(fastifyStatic, {
    root: fastify.dumps.storageRoot,
    serve: false,
    index: false,
    dotfiles: 'deny',
    // the type is the one the bytes were sniffed as (from the stored extension), set below
    contentType: false,
    // set below: the images belong to one user
    cacheControl: false
  })

  app.post('/v1/dumps', {
    // Order matters: who (401) and the Idempotency-Key (400) before the body is read, what
    // (400/413/415) before the quota, so that only authenticated, valid dumps are counted
    // and logged.
    onRequest: [fastify.imageDumpAuth.authenticate, readKey],
    bodyLimit: options.bodyLimit,
    // XML and the literal JSON mapping are reshaped into the canonical batch; the schema decides
    preValidation: negotiation.reshapeBatch,
    schema: { body: BatchSchema, headers: DumpRequestHeadersSchema, response: { 200: DumpResultSchema, 202: DumpResultSchema } },
    validatorCompiler: TypeBoxValidatorCompiler,
    schemaErrorFormatter: batchErrorFormatter,
    preHandler: [
      async (request) => {
        const record = fastify.dumps.admissionRecord(request.body, negotiation.bodyFormatOf(request))
        const key = request.idempotencyKey
        request.quotaRecord = key === null ? record : { ...record, idempotency: { key, batchSha256: batchDigest(request.body) } }
      },
      // admits the dump, or finds the one its Idempotency-Key already names (idempotentReplayOf)
      fastify.quota.enforce
    ],
    config: { xmlRoot: 'result' }
  }, async (request, reply) => {
    const respondAsync = prefersRespondAsync(request.headers.prefer)
    const replayOf = request.idempotentReplayOf
    if (replayOf !== undefined) return await replays.answer(request, reply, replayOf, respondAsync)

    const { principal, body } = request
    const requestId = request.admittedRequestId
    const run = runs.start(principal, requestId, body, negotiation.bodyFormatOf(request))
    if (!respondAsync) return await run
    // Prefer: respond-async: answered now; the dump goes on without its request
    fastify.dumps.runInBackground(run, { requestId })
    return sendAccepted(request, reply, requestId, { requestId, status: 'PENDING', items: numberBatch(body) })
  })

  app.get('/v1/dumps/:requestId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: { params: DumpParams }
  }, async (request, reply) => {
    const record = await fastify.dumps.find(request.principal.userid, request.params.requestId)
    if (record === undefined) throw new NotFoundError('dump not found')
    reply.header('X-Dump-Complete', String(record.complete))
    return reply.type(CONTENT_TYPES[record.format]).send(record.data)
  })

  app.get('/v1/dumps/:requestId/images/:imageId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: { params: ImageParams }
  }, async (request, reply) => {
    const { requestId, imageId } = request.params
    const image = await fastify.dumps.image(request.principal.userid, requestId, imageId)
    if (image === undefined) throw new NotFoundError('image not found')
    reply.header('X-Content-Type-Options', 'nosniff')
    // any cache may keep it only for this user, and asks again (a 304 with the ETag) before reuse
    reply.header('Cache-Control', 'private, no-cache')
    return reply.type(image.contentType).sendFile(image.file)
  })

  dumpListRoutes(fastify)
  dumpEventRoutes(fastify, options.events)
  dumpRetryRoutes(fastify, { runs, replays, readKey })
}
