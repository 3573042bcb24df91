/**
 * Errors as the client reads them: one `{statusCode, error, message}` body, in the format
 * the client speaks, for every error and for unknown routes. `useNegotiatedErrors` gives a
 * scope of routes that error handler; `errorHandling` is the opt-in app-wide form (the
 * error handler and the not-found handler of the scope it is registered in), for an app
 * that owns its server.
 */
import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { ErrorBody } from '../../schemas/error.js'
import { publicMessageOf, statusCodeOf } from '../../lib/errors.js'
import { clip } from '../../lib/excerpt.js'
import { isDict } from '../../lib/dict.js'
import { CONTENT_TYPES, addVaryAccept, responseFormatOf, unsupportedMediaType } from './media-types.js'
import { toXml } from './xml-writer.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What this route's body may be sent as, in the words of a 415 (a batch's types unless set). */
    accepts?: string
    /** What this route's body limit is called in a 413 ('BODY_LIMIT_BYTES' unless set). */
    bodyLimitName?: string
  }
}

export interface ErrorContext {
  /** the body limit that applied, and its name, for the 413 message */
  bodyLimit?: number
  bodyLimitName?: string
  /** the request's Content-Type, for the 415 message */
  contentType?: string
  /** what the route reads, for the 415 message */
  accepts?: string
  /** the reply's status when the error arrived (a hook may have set it) */
  replyStatus?: number
}

/**
 * The `{statusCode, error, message}` answer for an error. 4xx messages are the error's
 * own (Fastify's body-limit and media-type errors are reworded to name the setting and
 * what is accepted), clipped: whatever quotes the input stays short. 5xx get a generic
 * message, the real one goes to the log only, unless the error carries a `publicMessage`
 * (see lib/errors.ts).
 */
export function buildErrorBody (error: unknown, context: ErrorContext = {}): ErrorBody {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined
  const replyStatus = context.replyStatus !== undefined && context.replyStatus >= 400 && context.replyStatus <= 599 ? context.replyStatus : undefined
  let statusCode = statusCodeOf(error) ?? replyStatus ?? 500
  let message = error instanceof Error ? error.message : typeof error === 'string' ? error : ''

  if (code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    statusCode = 413
    const limit = context.bodyLimitName ?? 'BODY_LIMIT_BYTES'
    message = context.bodyLimit === undefined
      ? `request body is larger than ${limit}`
      : `request body is larger than ${limit} (${context.bodyLimit} bytes)`
  } else if (code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    statusCode = 415
    message = unsupportedMediaType(context.contentType, context.accepts).message
  } else if (typeof error === 'object' && error !== null && Array.isArray((error as { validation?: unknown }).validation)) {
    // Fastify's schema validation; its message already names the field ("body/name must be string")
    statusCode = 400
  }

  if (statusCode >= 500) {
    message = publicMessageOf(error) ?? 'the server could not complete the request; the failure is in the service log'
  } else if (message === '') {
    message = STATUS_CODES[statusCode] ?? 'Error'
  }
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', message: clip(message) }
}

/**
 * Closes the connection after this answer when the request's body is still arriving
 * (answered before it was read: a 401 from onRequest, a 404, a 415): otherwise Node reads
 * the rest of it, all of it, to keep the connection for the next request.
 */
export function closeIfBodyUnread (request: FastifyRequest, reply: FastifyReply): void {
  const { headers, raw } = request
  const announced = headers['transfer-encoding'] !== undefined || (headers['content-length'] !== undefined && headers['content-length'] !== '0')
  if (announced && !raw.complete && !raw.readableEnded) reply.header('connection', 'close')
}

/** Sends an error body, serialised here so no route's response schema or hook touches it. */
export function sendErrorBody (request: FastifyRequest, reply: FastifyReply, body: ErrorBody): void {
  reply.code(body.statusCode)
  addVaryAccept(reply)
  closeIfBodyUnread(request, reply)
  const format = responseFormatOf(request.headers)
  reply.type(CONTENT_TYPES[format]).send(format === 'xml' ? toXml(body, 'error') : JSON.stringify(body))
}

/** The error handler: logs (5xx as errors, 4xx as one short line) and answers. */
export function negotiatedErrorHandler (error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const { accepts, bodyLimitName } = request.routeOptions.config
  const body = buildErrorBody(error, {
    bodyLimit: request.routeOptions.bodyLimit,
    contentType: request.headers['content-type'],
    accepts,
    bodyLimitName,
    replyStatus: reply.statusCode
  })
  // what Fastify's default handler does with error.headers (e.g. @fastify/rate-limit)
  const headers = (error as { headers?: unknown }).headers
  if (isDict(headers)) {
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value === 'string' || typeof value === 'number') reply.header(name, value)
    }
  }
  if (body.statusCode >= 500) {
    request.log.error({ err: error }, 'request failed')
  } else {
    request.log.info({ statusCode: body.statusCode, reason: body.message }, 'request refused')
  }
  sendErrorBody(request, reply, body)
}

/** The answer for a route nobody serves; the body, if any, is not read. */
export function notFoundHandler (request: FastifyRequest, reply: FastifyReply): void {
  sendErrorBody(request, reply, {
    statusCode: 404,
    error: STATUS_CODES[404]!,
    message: `Route ${request.method}:${clip(request.url, 100)} not found`
  })
}

/** Gives the routes of this (encapsulated) scope the negotiated error handler. */
export function useNegotiatedErrors (scope: FastifyInstance): void {
  scope.setErrorHandler(negotiatedErrorHandler)
}

/**
 * App-wide error handling, opt-in: the negotiated error handler and not-found handler for
 * the scope it is registered in (fp: the registering scope itself). For an app that owns
 * its server; a host embedding the service keeps its own unless it registers this.
 */
export const errorHandling = fp(async function errorHandling (fastify: FastifyInstance): Promise<void> {
  fastify.setErrorHandler(negotiatedErrorHandler)
  fastify.setNotFoundHandler(notFoundHandler)
}, { name: 'image-dump-error-handling', fastify: '5.x' })
