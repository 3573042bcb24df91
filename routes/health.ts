import type { FastifyInstance } from 'fastify'
import Type from 'typebox'
import { describe } from '../plugins/api-docs.js'

const HealthSchema = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  database: Type.Union([Type.Literal('reachable'), Type.Literal('unreachable')])
})

export default async function healthRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/health', {
    schema: {
      summary: 'Liveness and database readiness',
      tags: ['operations'],
      response: {
        200: describe(HealthSchema, { description: 'The service is up and its database answers.' }),
        503: describe(HealthSchema, { description: 'The service is up but its database does not answer.' })
      }
    },
    config: { xmlRoot: 'health', shedLoad: false }
  }, async (request, reply) => {
    const report = await fastify.persistence.health()
    if (report.ok) return { status: 'ok', database: 'reachable' }
    // the reason names the database's host and port: for the log, not for anyone who asks
    request.log.warn({ problem: report.problem }, 'health check: database unreachable')
    return reply.code(503).send({ status: 'unavailable', database: 'unreachable' })
  })
}
