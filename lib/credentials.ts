import type { FastifyRequest } from 'fastify'
import type { LoginBody } from '../schemas/auth.js'

/** The username and password hash of a login, from the body (JSON or form) or a Basic header. */
export function readCredentials (request: FastifyRequest): LoginBody | undefined {
  const body = request.body as Partial<LoginBody> | undefined
  if (body !== undefined && body !== null && typeof body === 'object' && (body.username !== undefined || body.passwordHash !== undefined)) {
    return typeof body.username === 'string' && typeof body.passwordHash === 'string'
      ? { username: body.username, passwordHash: body.passwordHash }
      : undefined
  }
  const header = request.headers.authorization
  if (typeof header !== 'string') return undefined
  const match = /^Basic ([A-Za-z0-9+/=]{1,400})$/.exec(header)
  if (match === null) return undefined
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 1) return undefined
  return { username: decoded.slice(0, colon), passwordHash: decoded.slice(colon + 1) }
}
