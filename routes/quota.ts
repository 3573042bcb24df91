import type { FastifyInstance } from 'fastify'
import { QuotaSchema } from '../schemas/quota.js'
import { ErrorSchema } from '../schemas/error.js'

export default async function quotaRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/v1/quota', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: { response: { 200: QuotaSchema, 401: ErrorSchema } },
    config: { xmlRoot: 'quota' }
  }, async (request) => await fastify.quota.usage(request.principal))
}
