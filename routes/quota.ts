import type { FastifyInstance } from 'fastify'
import { QuotaSchema } from '../schemas/quota.js'
import { ErrorSchema } from '../schemas/error.js'

export default async function quotaRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/v1/quota', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'The caller\'s plan and quota',
      description: 'The same numbers as the quota headers of a dump: the plan\'s limit per rolling hour, how much of it is used, and when the next slot frees.',
      tags: ['quota'],
      response: { 200: QuotaSchema, 401: ErrorSchema }
    },
    config: { xmlRoot: 'quota' }
  }, async (request) => await fastify.quota.usage(request.principal))
}
