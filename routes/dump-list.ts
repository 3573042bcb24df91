/**
 * GET /v1/dumps: the caller's own dumps, newest first, a page at a time.
 *
 * The cursor is opaque to clients: it names the last dump of the page before, so a page
 * continues strictly below it. Dumps admitted meanwhile are newer and appear only on a
 * first page, never in the middle: paging through finds every dump once, without gaps.
 */
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { BadRequestError } from '../lib/errors.js'
import { DumpListQuerySchema, DumpListSchema } from '../schemas/dump-list.js'

const CURSOR_PREFIX = 'before:'

export function encodeCursor (requestId: number): string {
  return Buffer.from(`${CURSOR_PREFIX}${requestId}`).toString('base64url')
}

/** The dump id a cursor continues below, or undefined when it is not one this service gave. */
export function decodeCursor (cursor: string): number | undefined {
  if (!/^[A-Za-z0-9_-]+$/.test(cursor)) return undefined
  const text = Buffer.from(cursor, 'base64url').toString('utf8')
  if (!text.startsWith(CURSOR_PREFIX)) return undefined
  const digits = text.slice(CURSOR_PREFIX.length)
  if (!/^[1-9][0-9]{0,9}$/.test(digits)) return undefined
  const id = Number(digits)
  return id <= 2 ** 31 - 1 ? id : undefined
}

export function dumpListRoutes (fastify: FastifyInstance): void {
  fastify.withTypeProvider<TypeBoxTypeProvider>().get('/v1/dumps', {
    onRequest: fastify.imageDumpAuth.authenticate,
    schema: {
      summary: 'The caller\'s dumps, newest first',
      description: 'A page of dumps with their status, time and progress counts; `nextCursor` asks for the next page (null on the last).',
      tags: ['dumps'],
      querystring: DumpListQuerySchema,
      response: { 200: DumpListSchema }
    },
    config: { xmlRoot: 'page' }
  }, async (request) => {
    const { limit, cursor } = request.query
    const before = cursor === undefined ? undefined : decodeCursor(cursor)
    if (before === undefined && cursor !== undefined) throw new BadRequestError('cursor is not one a page of this list gave: start again without it')
    const { dumps, next } = await fastify.dumps.listing.page(request.principal.userid, before, limit)
    return { dumps, nextCursor: next === undefined ? null : encodeCursor(next) }
  })
}
