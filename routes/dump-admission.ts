/**
 * What POST /v1/dumps and POST /v1/dumps/{id}/retry share around the quota's admission:
 * the row a batch is admitted with (and its Idempotency-Key), and the answer once admitted
 * (a replay of the key, the synchronous result, or 202 with the dump running on).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { prefersRespondAsync } from '../lib/prefer.js'
import { numberBatch } from '../plugins/dumps.js'
import type { Batch, BodyFormat } from '../schemas/batch.js'
import type { DumpResult } from '../schemas/dump.js'
import { sendAccepted } from './dump-answers.js'
import type { DumpRuns } from './dump-runs.js'
import { batchDigest, type Replays } from './idempotency.js'

export function createDumpAdmission (fastify: FastifyInstance, runs: DumpRuns, replays: Replays) {
  return {
    /** Sets the row the quota admits `batch` with: its admission record, and the request's key with the batch's digest. */
    prepare (request: FastifyRequest, batch: Batch, format: BodyFormat, retryOf?: number): void {
      const record = fastify.dumps.admissionRecord(batch, format, retryOf)
      const key = request.idempotencyKey
      request.quotaRecord = key === null ? record : { ...record, idempotency: { key, batchSha256: batchDigest(batch) } }
    },

    /** The answer to an admitted (or replayed) dump of `batch`. */
    async answer (request: FastifyRequest, reply: FastifyReply, batch: Batch, format: BodyFormat, retryOf?: number): Promise<DumpResult | FastifyReply> {
      const respondAsync = prefersRespondAsync(request.headers.prefer)
      const replayOf = request.idempotentReplayOf
      if (replayOf !== undefined) return await replays.answer(request, reply, replayOf, respondAsync)
      const requestId = request.admittedRequestId
      const run = runs.start(request.principal, requestId, batch, format, retryOf)
      if (!respondAsync) return await run
      // Prefer: respond-async: answered now; the dump goes on without its request
      fastify.dumps.runInBackground(run, { requestId })
      const retry = retryOf === undefined ? {} : { retryOf }
      return sendAccepted(request, reply, requestId, { requestId, ...retry, status: 'PENDING', items: numberBatch(batch) })
    }
  }
}

export type DumpAdmission = ReturnType<typeof createDumpAdmission>
