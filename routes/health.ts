import type { FastifyInstance } from 'fastify'
import Type from 'typebox'

const HealthSchema = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  database: Type.String()
})

export default async function healthRoutes (fastify: FastifyInstance): Promise<void> {
  fastify.get('/health', {
    schema: { response: { 200: HealthSchema, 503: HealthSchema } },
    config: { xmlRoot: 'health' }
  }, async (_request, reply) => {
    const report = await fastify.persistence.health()
    if (report.ok) return { status: 'ok', database: 'reachable' }
    return reply.code(503).send({ status: 'unavailable', database: report.problem })
  })
}
