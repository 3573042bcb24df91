import { createHash, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { createServiceError } from '../lib/errors.js'
import { AuthError } from '../plugins/auth.js'
import { describe, METRICS_BEARER } from '../plugins/api-docs.js'
import { ErrorSchema } from '../schemas/error.js'

export interface MetricsRoutesOptions {
  /** when set, the Bearer token a scrape must present (METRICS_TOKEN) */
  token?: string
}

/**
 * With workers, the whole service's counts could not be gathered in time (a worker did not
 * answer). A failed scrape rather than one worker's counts: Prometheus marks it (`up` 0) and
 * skips it, where a partial one would read as a counter reset.
 */
export class MetricsUnavailableError extends createServiceError('METRICS_UNAVAILABLE', 503,
  'the metrics of every worker could not be gathered in time; the next scrape may succeed') {}

const digest = (text: string): Buffer => createHash('sha256').update(text).digest()

export default async function metricsRoutes (fastify: FastifyInstance, options: MetricsRoutesOptions): Promise<void> {
  const metrics = fastify.imageDumpMetrics
  const expected = options.token === undefined ? undefined : digest(options.token)

  fastify.get('/metrics', {
    schema: {
      summary: 'Prometheus metrics',
      description: 'The text exposition format; every name starts with image_dump_. When METRICS_TOKEN is set, it is required as a Bearer token.',
      tags: ['operations'],
      ...(expected === undefined ? {} : { security: [{ [METRICS_BEARER]: [] }] }),
      response: {
        200: { description: 'The metrics.', content: { 'text/plain': { schema: { type: 'string' } } } },
        ...(expected === undefined ? {} : { 401: describe(ErrorSchema, { description: 'METRICS_TOKEN is set and was not presented.' }) }),
        ...(metrics.gathered ? { 503: describe(ErrorSchema, { description: 'A worker did not give its metrics in time.' }) } : {})
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
    let scraped: { contentType: string, text: string }
    try {
      scraped = await metrics.scrape()
    } catch (error) {
      throw new MetricsUnavailableError(`gathering the workers' metrics failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
    }
    return reply.type(scraped.contentType).send(scraped.text)
  })
}
