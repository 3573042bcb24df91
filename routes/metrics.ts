import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { AuthError } from '../plugins/auth.js'
import { describe, METRICS_BEARER } from '../plugins/api-docs.js'
import { ErrorSchema } from '../schemas/error.js'

export interface MetricsRoutesOptions {
  /** when set, the Bearer token a scrape must present (METRICS_TOKEN) */
  token?: string
}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

export default async function metricsRoutes (fastify: FastifyInstance, options: MetricsRoutesOptions): Promise<void> {
  const { registry } = fastify.imageDumpMetrics
  const expected = options.token === undefined ? undefined : digest(options.token)

  fastify.get('/metrics', {
    schema: {
      summary: 'Prometheus metrics',
      description: 'The text exposition format; every name starts with image_dump_. When METRICS_TOKEN is set, it is required as a Bearer token.',
      tags: ['operations'],
      ...(expected === undefined ? {} : { security: [{ [METRICS_BEARER]: [] }] }),
      response: {
        200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' } } } },
        ...(expected === undefined ? {} : { 401: describe(ErrorSchema, { description: 'METRICS_TOKEN is set and was not presented.' }) })
      }
    },
    config: { shedLoad: false },
    onRequest: async (request) => {
      if (expected === undefined) return
      const header = request.headers.authorization ?? ''
      const presented = /^bearer /i.test(header) ? header.slice(7) : ''
      // digests of equal length, compared in constant time: nothing about the token leaks
      if (!timingSafeEqual(digest(presented), expected)) {
        throw new AuthError('send "Authorization: Bearer <METRICS_TOKEN>"')
      }
    }
  }, async (_request, reply) => {
    const text = await registry.metrics()
    return reply.type(registry.contentType).send(text)
  })
}
