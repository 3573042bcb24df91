import createError from '@fastify/error'

/**
 * The service's errors, and the one convention every error a route or hook throws follows
 * (the error handler in plugins/content-negotiation/error-handler.ts reads it):
 *
 * - `statusCode`: the HTTP status; an error without a 4xx/5xx one is answered 500.
 * - `message`: for the log. A 4xx's message is also the client's answer, so it quotes the
 *   input only through lib/excerpt.ts.
 * - `publicMessage` (5xx only): the words the client is told instead of `message`, which may
 *   name internals (a database error names its host and port). A 5xx without one is answered
 *   with a generic sentence.
 */

type Message = [message: string]

export const BadRequestError = createError<'BAD_REQUEST', 400, Message>('BAD_REQUEST', '%s', 400)
export const NotFoundError = createError<'NOT_FOUND', 404, Message>('NOT_FOUND', '%s', 404)
export const ConflictError = createError<'CONFLICT', 409, Message>('CONFLICT', '%s', 409)
export const PayloadTooLargeError = createError<'PAYLOAD_TOO_LARGE', 413, Message>('PAYLOAD_TOO_LARGE', '%s', 413)
export const UnsupportedMediaTypeError = createError<'UNSUPPORTED_MEDIA_TYPE', 415, Message>('UNSUPPORTED_MEDIA_TYPE', '%s', 415)
export const UnprocessableContentError = createError<'UNPROCESSABLE_CONTENT', 422, Message>('UNPROCESSABLE_CONTENT', '%s', 422)

export interface ServiceErrorOptions {
  cause?: unknown
  /** the client's words for this one error, instead of the class's */
  publicMessage?: string
}

/**
 * A class of 5xx errors with words for the client:
 *
 * ```ts
 * export class QuotaUnavailableError extends createServiceError('QUOTA_UNAVAILABLE', 503, 'the quota cannot be checked right now; try again') {}
 * throw new QuotaUnavailableError(`admission failed: ${error.message}`, { cause: error })
 * ```
 */
export function createServiceError<C extends string, S extends number> (code: C, statusCode: S, publicMessage: string) {
  const Base = createError<C, S, [message: string, options?: { cause: unknown }]>(code, '%s', statusCode)
  return class ServiceError extends Base {
    readonly publicMessage: string

    constructor (message: string, options: ServiceErrorOptions = {}) {
      // @fastify/error takes the cause from a trailing `{ cause }` argument
      super(message, ...(options.cause === undefined ? [] : [{ cause: options.cause }]))
      this.publicMessage = options.publicMessage ?? publicMessage
    }
  }
}

/** The status an error carries (`statusCode`, else `status`), if it is an HTTP error status. */
export function statusCodeOf (error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const { statusCode, status } = error as { statusCode?: unknown, status?: unknown }
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode <= 599) return statusCode
  if (typeof status === 'number' && status >= 400 && status <= 599) return status
  return undefined
}

/** The words for the client a (5xx) error carries, if any. */
export function publicMessageOf (error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined
  const { publicMessage } = error as { publicMessage?: unknown }
  return typeof publicMessage === 'string' && publicMessage !== '' ? publicMessage : undefined
}
