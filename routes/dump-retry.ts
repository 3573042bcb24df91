/**
 * POST /v1/dumps/{requestId}/retry: a new dump of the images that failed in a complete
 * dump, each under its item, with `retryOf` naming the dump it retries. It is a dump like
 * any other: one quota slot, the same answers (synchronous, or 202 with
 * `Prefer: respond-async`), and an `Idempotency-Key` makes it safe to send again.
 *
 * A dump still running cannot be retried yet (409: its failures are not all known), nor
 * one without failures (409: nothing to retry). Images that failed as INTERRUPTED are
 * retried like any other failure.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Type from 'typebox'
import { ConflictError, NotFoundError } from '../lib/errors.js'
import { failedBatch, readRecord } from '../plugins/dumps.js'
import type { Batch, BodyFormat } from '../schemas/batch.js'
import type { DumpAdmission } from './dump-admission.js'
import { DumpResultSchema } from '../schemas/dump.js'
import { ErrorSchema } from '../schemas/error.js'
import { describe } from '../plugins/api-docs.js'

const DumpParams = Type.Object({ requestId: Type.Integer({ minimum: 1, maximum: 2 ** 31 - 1 }) })

declare module 'fastify' {
  interface FastifyRequest {
    /** the batch a retry sends and its format, once its preHandler has built it */
    retry: { of: number, batch: Batch, format: BodyFormat } | null
  }
}

export interface DumpRetryRoutesOptions {
  admission: DumpAdmission
  /** the onRequest hook that reads the Idempotency-Key (routes/dumps.ts) */
  readKey: (request: FastifyRequest) => Promise<void>
}

export function dumpRetryRoutes (fastify: FastifyInstance, { admission, readKey }: DumpRetryRoutesOptions): void {
  fastify.decorateRequest('retry', null)

  fastify.withTypeProvider<TypeBoxTypeProvider>().post('/v1/dumps/:requestId/retry', {
    onRequest: [fastify.imageDumpAuth.authenticate, readKey],
    // nothing is read from a body: the dump retried says everything
    bodyLimit: 1024,
    schema: {
      summary: 'Retry the images that failed in a dump',
      description: 'A new dump (one quota slot) of the failed images of a complete dump, with `retryOf` naming it.',
      tags: ['dumps'],
      params: DumpParams,
      response: {
        200: DumpResultSchema,
        202: DumpResultSchema,
        404: describe(ErrorSchema, { description: 'The caller has no dump with this id.' }),
        409: describe(ErrorSchema, { description: 'The dump is still running, or has no failed image.' })
      }
    },
    preHandler: [
      async (request) => {
        const of = request.params.requestId
        const record = await fastify.dumps.find(request.principal.userid, of)
        if (record === undefined) throw new NotFoundError('dump not found')
        if (!record.complete) {
          throw new ConflictError(`dump ${of} is still running: retry it once it is complete (follow it at GET /v1/dumps/${of})`)
        }
        let batch: Batch | undefined
        try {
          batch = failedBatch(readRecord(record.data, record.format))
        } catch {
          batch = undefined
        }
        if (batch === undefined) throw new ConflictError(`dump ${of} has no failed image to retry`)
        request.retry = { of, batch, format: record.format }
        admission.prepare(request, batch, record.format, of)
      },
      fastify.quota.enforce
    ],
    config: { xmlRoot: 'result' }
  }, async (request, reply) => {
    const { of, batch, format } = request.retry!
    return await admission.answer(request, reply, batch, format, of)
  })
}
