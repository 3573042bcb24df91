/**
 * Answers of POST /v1/dumps that are not the synchronous result: 202 Accepted for a dump
 * that runs on (Prefer: respond-async), and the answers built from a dump's stored record
 * (a replay of its Idempotency-Key).
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Value } from 'typebox/value'
import type { StoredRequest } from '../db/request-lookups.js'
import { CONTENT_TYPES, addVaryAccept } from '../plugins/content-negotiation/media-types.js'
import { progressOf, readRecord, statusOf } from '../plugins/dumps.js'
import { DumpResultSchema, type DumpResult } from '../schemas/dump.js'

/**
 * A stored record as an answer document, with its request id. A JSON record is the
 * document as it was written; one read from XML is all text, and the schema gives numbers
 * back their type.
 */
export function recordDocument (requestId: number, record: StoredRequest): DumpResult {
  const retryOf = record.retryOf == null ? {} : { retryOf: record.retryOf }
  if (record.format === 'json') return { ...JSON.parse(record.data.toString('utf8')) as DumpResult, requestId, ...retryOf }
  const items = readRecord(record.data, record.format)
  const doc = { requestId, ...retryOf, status: statusOf(items.flatMap((item) => item.images)), ...(record.complete ? {} : { progress: progressOf(items) }), items }
  return Value.Convert(DumpResultSchema, doc) as DumpResult
}

/**
 * A complete record as the answer the dump gave: an XML record as stored, to a client
 * that reads XML (it is that answer, byte for byte); otherwise as a document, which the
 * route serialises as it serialised the dump's own answer.
 */
export function sendRecord (request: FastifyRequest, reply: FastifyReply, requestId: number, record: StoredRequest): FastifyReply {
  if (record.format !== 'xml' || request.responseFormat !== 'xml') return reply.send(recordDocument(requestId, record))
  addVaryAccept(reply)
  return reply.type(CONTENT_TYPES.xml).send(record.data)
}

/** Where the dumps are, under the route's own prefix: POST /v1/dumps and …/{id}/retry both answer with a dump there. */
function collectionUrlOf (request: FastifyRequest): string {
  return (request.routeOptions.url ?? '/v1/dumps').replace(/\/:requestId\/retry$/, '')
}

/**
 * 202 Accepted (RFC 7240 respond-async): where the dump's record is (`Location`, under the
 * route's own prefix), and the record so far, in the format the client reads.
 */
export function sendAccepted (request: FastifyRequest, reply: FastifyReply, requestId: number, soFar: DumpResult): FastifyReply {
  return reply.code(202)
    .header('location', `${collectionUrlOf(request)}/${requestId}`)
    .header('preference-applied', 'respond-async')
    .send(soFar)
}
