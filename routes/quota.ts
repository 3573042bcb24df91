import type { FastifyInstance } from 'fastify'
import { QuotaSchema } from '../schemas/quota.js'
import { ErrorSchema } from '../schemas/error.js'
import { setByHook } from '../lib/request-state.js'

export default async function quotaRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/v1/quota', {
    onRequest: fastify.authenticate,
    schema: { response: { 200: QuotaSchema, 401: ErrorSchema } },
    config: { xmlRoot: 'quota' }
  }, async (request) => await fastify.quota.usage(setByHook(request.principal, 'request.principal')))
}
