/**
 * Idempotency-Key on POST /v1/dumps (the IETF httpapi idempotency-key draft): the key a
 * request carries, the digest that tells one batch from another, and the answer to a
 * request whose key already names a dump (its replay).
 *
 * The key belongs to the user who sent it, and names the dump admitted with it for 24 h
 * (QuotaOptions.idempotencyKeySeconds); the admission itself (db/requests.ts, quota.ts)
 * makes sure that one key makes one dump, on every instance.
 */
import { createHash } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Compile } from 'typebox/compile'
import type { KeyOwner } from '../db/request-lookups.js'
import { BadRequestError, UnprocessableContentError, createServiceError } from '../lib/errors.js'
import { quote } from '../lib/excerpt.js'
import { fieldCount } from '../lib/header-fields.js'
import type { Batch } from '../schemas/batch.js'
import { IdempotencyKeySchema } from '../schemas/dump-headers.js'
import { recordDocument, sendAccepted, sendRecord } from './dump-answers.js'
import type { DumpRuns } from './dump-runs.js'

const isValidKey = Compile(IdempotencyKeySchema)
const RULE = 'an Idempotency-Key is 1 to 255 visible ASCII characters (0x21-0x7E)'

/** The request's Idempotency-Key, if it sent one; a 400 naming the rule when it breaks it. */
export function idempotencyKeyOf (request: FastifyRequest): string | undefined {
  // Node joins a repeated field into "a, b": which key was meant cannot be told
  if (fieldCount(request.raw.rawHeaders, 'idempotency-key') > 1) throw new BadRequestError('the Idempotency-Key header must be sent once')
  const key = request.headers['idempotency-key']
  if (key === undefined) return undefined
  if (typeof key === 'string' && isValidKey.Check(key)) return key
  const text = String(key)
  const problem = text === ''
    ? 'the Idempotency-Key is empty'
    : text.length > 255
      ? `the Idempotency-Key is ${text.length} characters long`
      : `the Idempotency-Key ${quote(text)} has a character that is not visible ASCII at position ${text.search(/[^\x21-\x7e]/) + 1}`
  throw new BadRequestError(`${problem}: ${RULE}`)
}

/**
 * SHA-256 of the canonical batch: every item's fields in a fixed order, absent ones as
 * null, whatever the body's format, field order or spacing. The format is compared apart
 * (the request row's dataformat), so a mismatch can be named.
 */
export function batchDigest (batch: Batch): Buffer {
  const canonical = batch.items.map((item) => [item.name, item.manufacturer ?? null, item.brand ?? null, item.category ?? null, item.images])
  return createHash('sha256').update(JSON.stringify(canonical)).digest()
}

/** A replay cannot wait for its dump: this instance is stopping and the dump runs on another. */
export class ReplayInterruptedError extends createServiceError('REPLAY_INTERRUPTED', 503,
  'the service is stopping before this dump completed; send the same request again (same Idempotency-Key) for its result') {}

/** An AbortSignal that aborts when the reply's connection closes (the client went away, or it was answered). */
function closeSignal (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => controller.abort())
  return controller.signal
}

export function createReplays (fastify: FastifyInstance, runs: DumpRuns) {
  return {
    /**
     * The answer to a request whose key names `owner`: 422 when the batch (or its format)
     * is not the one first sent with the key; else `Idempotent-Replayed: true` and the
     * dump. While it runs, a synchronous client waits for it to complete; an asynchronous
     * one gets 202 with the record so far. A complete dump is answered as it was recorded.
     */
    async answer (request: FastifyRequest, reply: FastifyReply, owner: KeyOwner, respondAsync: boolean): Promise<FastifyReply> {
      const sent = request.quotaRecord
      const key = sent?.idempotency
      if (sent === null || key === undefined) throw new Error('a replay needs the request\'s idempotency key and batch digest (quotaRecord)')
      const mismatch = owner.dataformat !== sent.dataformat
        ? `was first sent with a batch in ${owner.dataformat.toUpperCase()}, this one is in ${sent.dataformat.toUpperCase()}`
        : owner.batchSha256 === null || !owner.batchSha256.equals(key.batchSha256)
          ? 'was first sent with a different batch'
          : undefined
      if (mismatch !== undefined) {
        throw new UnprocessableContentError(`the Idempotency-Key ${quote(key.key)} ${mismatch} (dump ${owner.requestId}); send a new batch with a new key`)
      }

      reply.header('idempotent-replayed', 'true')
      const { userid } = request.principal
      if (!respondAsync && !owner.complete) {
        request.log.info({ requestId: owner.requestId }, 'replay: waiting for the dump to complete')
        const waited = await runs.waitForComplete(userid, owner.requestId, closeSignal(reply))
        if (waited === 'stopping') throw new ReplayInterruptedError(`replay of dump ${owner.requestId}: the service is stopping`)
        // 'client gone': whatever is sent next goes nowhere
      }
      const record = await fastify.dumps.find(userid, owner.requestId)
      if (record === undefined) throw new Error(`dump ${owner.requestId}, named by an idempotency key, has no record`)
      if (!record.complete) return sendAccepted(request, reply, owner.requestId, recordDocument(owner.requestId, record))
      return sendRecord(request, reply, owner.requestId, record)
    }
  }
}

export type Replays = ReturnType<typeof createReplays>
