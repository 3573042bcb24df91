import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { DumpResultSchema } from '../schemas/dump.js'

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })
const ImageParams = Type.Object({
  requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }),
  imageId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 })
})

const CONTENT_TYPES = { json: 'application/json; charset=utf-8', xml: 'application/xml; charset=utf-8' } as const

export default async function dumpRoutes (fastify: FastifyInstance): Promise<void> {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()
  const notFound = (what: string) => Object.assign(new Error(`${what} not found`), { statusCode: 404 })

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
    // Order matters: who (401) before parsing, what (400/413/415) before the quota, so
    // that only authenticated, valid dumps are counted and logged.
    onRequest: fastify.imageDumpAuth.authenticate,
    preValidation: [
      fastify.negotiation.batchHook,
      async (request) => { request.quotaRecord = fastify.dumps.admissionRecord(request.batch!, request.bodyFormat!) }
    ],
    preHandler: fastify.quota.enforce,
    schema: { response: { 200: DumpResultSchema } },
    config: { xmlRoot: 'result' }
  }, async (request) => {
    return await fastify.dumps.process(request.principal, request.admittedRequestId, request.batch!, request.bodyFormat!)
  })

  app.get('/v1/dumps/:requestId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: { params: DumpParams }
  }, async (request, reply) => {
    const record = await fastify.dumps.find(request.principal.userid, request.params.requestId)
    if (record === undefined) throw notFound('dump')
    reply.header('X-Dump-Complete', String(record.complete))
    return reply.type(CONTENT_TYPES[record.format]).send(record.data)
  })

  app.get('/v1/dumps/:requestId/images/:imageId', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: { params: ImageParams }
  }, async (request, reply) => {
    const { requestId, imageId } = request.params
    const image = await fastify.dumps.image(request.principal.userid, requestId, imageId)
    if (image === undefined) throw notFound('image')
    reply.header('X-Content-Type-Options', 'nosniff')
    // any cache may keep it only for this user, and asks again (a 304 with the ETag) before reuse
    reply.header('Cache-Control', 'private, no-cache')
    return reply.type(image.contentType).sendFile(image.file)
  })
}
