import { createReadStream } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { BatchSchema } from '../schemas/batch.js'
import { DumpResultSchema } from '../schemas/dump.js'
import { batchErrorFormatter } from '../plugins/content-negotiation/batch.js'
import { CONTENT_TYPES } from '../plugins/content-negotiation/media-types.js'
import { NotFoundError } from '../lib/errors.js'
import { setByHook } from '../lib/request-state.js'

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })
const ImageParams = Type.Object({
  requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }),
  imageId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 })
})

export interface DumpRoutesOptions {
  /** the largest batch body read, in bytes (BODY_LIMIT_BYTES) */
  bodyLimit: number
}

export default async function dumpRoutes (fastify: FastifyInstance, options: DumpRoutesOptions): Promise<void> {
  const negotiation = fastify.imageDumpNegotiation
  // this scope reads batches, in JSON or XML, and no other body
  negotiation.readBodies(fastify, ['json', 'xml'])
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.post('/v1/dumps', {
    // Order matters: who (401) before the body is read, what (400/413/415) before the
    // quota, so that only authenticated, valid dumps are counted and logged.
    onRequest: fastify.authenticate,
    bodyLimit: options.bodyLimit,
    // XML and the literal JSON mapping are reshaped into the canonical batch; the schema decides
    preValidation: negotiation.reshapeBatch,
    schema: { body: BatchSchema, response: { 200: DumpResultSchema } },
    validatorCompiler: TypeBoxValidatorCompiler,
    schemaErrorFormatter: batchErrorFormatter,
    preHandler: [
      async (request) => { request.quotaRecord = fastify.dumps.admissionRecord(request.body, negotiation.bodyFormatOf(request)) },
      fastify.quota.enforce
    ],
    config: { xmlRoot: 'result' }
  }, async (request) => {
    const principal = setByHook(request.principal, 'request.principal')
    const requestId = setByHook(request.admittedRequestId, 'request.admittedRequestId')
    return await fastify.dumps.process(principal, requestId, request.body, negotiation.bodyFormatOf(request))
  })

  app.get('/v1/dumps/:requestId', {
    onRequest: fastify.authenticate,
    schema: { params: DumpParams }
  }, async (request, reply) => {
    const record = await fastify.dumps.find(setByHook(request.principal, 'request.principal').userid, request.params.requestId)
    if (record === undefined) throw new NotFoundError('dump not found')
    reply.header('X-Dump-Complete', String(record.complete))
    return reply.type(CONTENT_TYPES[record.format]).send(record.data)
  })

  app.get('/v1/dumps/:requestId/images/:imageId', {
    onRequest: fastify.authenticate,
    schema: { params: ImageParams }
  }, async (request, reply) => {
    const { requestId, imageId } = request.params
    const image = await fastify.dumps.image(setByHook(request.principal, 'request.principal').userid, requestId, imageId)
    if (image === undefined) throw new NotFoundError('image not found')
    reply.header('X-Content-Type-Options', 'nosniff')
    return reply.type(image.contentType).send(createReadStream(image.path))
  })
}
