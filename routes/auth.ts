import formbody from '@fastify/formbody'
import type { FastifyInstance } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import { INVALID_CREDENTIALS } from '../plugins/auth.js'
import { readCredentials } from '../lib/credentials.js'
import { LoginBodySchema, TokenResponseSchema } from '../schemas/auth.js'
import { ErrorSchema } from '../schemas/error.js'
import { describe } from '../plugins/api-docs.js'

// credentials are a few hundred bytes in any of the forms a login takes
const LOGIN_BODY_LIMIT = 4 * 1024

export default async function authRoutes (fastify: FastifyInstance): Promise<void> {
  // A login reads JSON or a form, nothing else. Form bodies are a login convenience only;
  // registered here, they stay out of the dumps routes.
  fastify.imageDumpNegotiation.readBodies(fastify, ['json'])
  await fastify.register(formbody)
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>()

  app.post('/v1/auth/token', {
    bodyLimit: LOGIN_BODY_LIMIT,
    schema: {
      summary: 'Get a token',
      description: 'Credentials as JSON or form fields, or as `Authorization: Basic base64(username:passwordHash)`. ' +
        'Every login makes the user\'s earlier tokens stop working. Repeated failures are slowed down (429).',
      tags: ['auth'],
      consumes: ['application/json', 'application/x-www-form-urlencoded'],
      security: [{}, { imageDumpBasic: [] }],
      body: LoginBodySchema,
      response: {
        200: describe(TokenResponseSchema, { description: 'A Bearer token (RFC 6749 §5.1), valid for `expires_in` seconds.' }),
        400: ErrorSchema,
        401: describe(ErrorSchema, { description: 'Wrong username or password (one answer for both).', headers: { 'WWW-Authenticate': { type: 'string', description: 'Basic realm="image-dump"' } } }),
        429: describe(ErrorSchema, { description: 'Too many failed logins for this username or network; Retry-After says when to try again.' })
      }
    },
    // The body is optional when credentials come in a Basic header.
    preValidation: async (request) => {
      if (request.body === undefined) {
        const credentials = readCredentials(request)
        if (credentials !== undefined) request.body = credentials
      }
    },
    config: { countsAsLogin: true, xmlRoot: 'token', accepts: 'application/json or application/x-www-form-urlencoded', bodyLimitName: 'the limit of a login' }
  }, async (request, reply) => {
    const { username, passwordHash } = request.body
    const result = await fastify.imageDumpAuth.login(username, passwordHash, request.ip)
    if (result.outcome === 'throttled') {
      reply.header('Retry-After', result.retryAfterSeconds)
      return reply.code(429).send({ statusCode: 429, error: 'Too Many Requests', message: result.message })
    }
    if (result.outcome === 'refused') {
      reply.header('WWW-Authenticate', 'Basic realm="image-dump"')
      return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: INVALID_CREDENTIALS })
    }
    reply.header('Cache-Control', 'no-store')
    return result.token
  })
}
