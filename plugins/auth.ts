import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import jwt from '@fastify/jwt'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { now } from '../db/engine.js'
import { hashPasswordHash, verifyPasswordHash } from '../lib/password.js'
import type { LoginBody, TokenResponse } from '../schemas/auth.js'

export interface AuthOptions {
  /** token lifetime in seconds (TOKEN_EXPIRY) */
  tokenExpirySeconds: number
  /** failed logins allowed per client address and username within `failedLoginWindowMs` */
  maxFailedLogins?: number
  failedLoginWindowMs?: number
}

/** Who a verified token belongs to. */
export interface Principal {
  userid: number
  username: string
  plan: string
}

const SECRET_BYTES = 32
export const INVALID_CREDENTIALS = 'invalid username or password'

export class AuthError extends Error {
  statusCode = 401
  code = 'UNAUTHORIZED'
}

/**
 * The database could not be asked about a token or a login: no verdict on the credentials,
 * so not a 401 (a client would throw away a good token), and not the database's own words
 * (they name its host and port).
 */
export class AuthUnavailableError extends Error {
  statusCode = 503
  code = 'AUTH_UNAVAILABLE'
  readonly publicMessage = 'credentials cannot be checked right now: the database is unavailable or busy; try again'
}

async function fromDatabase<T> (what: string, query: () => Promise<T>): Promise<T> {
  try {
    return await query()
  } catch (error) {
    throw new AuthUnavailableError(`${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
}

declare module '@fastify/jwt' {
  interface FastifyJWT {
    payload: { sub: string }
    user: { sub: string, iat: number, exp: number }
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    auth: AuthService
    /** onRequest/preHandler hook: 401 unless a valid Bearer token is presented; sets request.principal */
    authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
  interface FastifyRequest {
    principal?: Principal
  }
}

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

/** How many times a header field appears in a request (rawHeaders: name, value, name, value, …). */
function fieldCount (rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) count++
  return count
}

export function createAuthService (fastify: FastifyInstance, options: AuthOptions) {
  const { db, engine } = fastify.persistence
  // Verifying against a real hash for unknown users too keeps "no such user" and
  // "wrong password" indistinguishable by timing as well as by answer.
  const dummyHash = hashPasswordHash('0'.repeat(64))

  return {
    /** Checks the credentials and, on success, rotates the user's secret and signs a token with it. */
    async login (username: string, passwordHash: string): Promise<TokenResponse | undefined> {
      const user = await fromDatabase('login: user lookup failed', () => fastify.users.findByUsername(username))
      const stored = user?.passwordhash ?? await dummyHash
      const ok = await verifyPasswordHash(stored, passwordHash)
      if (user === undefined || user.passwordhash == null || !ok) return undefined

      const secret = randomBytes(SECRET_BYTES)
      const row = { userid: user.userid, user_secret: secret, last_updated: now(engine) }
      const insert = db.insertInto('tokens').values(row)
      await fromDatabase('login: secret rotation failed', () => (engine === 'mysql'
        ? insert.onDuplicateKeyUpdate({ user_secret: secret, last_updated: now(engine) })
        : insert.onConflict((oc) => oc.column('userid').doUpdateSet({ user_secret: secret, last_updated: now(engine) }))
      ).execute())

      const token = fastify.jwt.sign({ sub: String(user.userid) }, { key: secret, algorithm: 'HS256', expiresIn: options.tokenExpirySeconds })
      return { access_token: token, token_type: 'Bearer', expires_in: options.tokenExpirySeconds }
    },

    /** The secret and owner of a token's subject, or undefined when there is no usable secret. */
    async secretFor (sub: unknown): Promise<{ secret: Buffer, principal: Principal } | undefined> {
      if (typeof sub !== 'string' || !/^[1-9][0-9]{0,9}$/.test(sub)) return undefined
      const row = await db.selectFrom('tokens')
        .innerJoin('users', 'users.userid', 'tokens.userid')
        .select(['tokens.user_secret', 'users.userid', 'users.username', 'users.plan'])
        .where('tokens.userid', '=', Number(sub))
        .executeTakeFirst()
      // An empty key made old fast-jwt versions skip the signature check; whatever the
      // version, a row without a full-length secret authenticates nobody.
      if (row === undefined || row.user_secret == null || row.user_secret.length < SECRET_BYTES) return undefined
      return { secret: Buffer.from(row.user_secret), principal: { userid: row.userid, username: row.username, plan: row.plan } }
    }
  }
}

export type AuthService = ReturnType<typeof createAuthService> & { loginThrottle: LoginThrottle }

/** Slows down guessing: failed logins are counted per client address and username. */
export interface LoginThrottle {
  /** seconds until another attempt is allowed, or 0 when allowed now */
  retryAfter (request: FastifyRequest): Promise<number>
  recordFailure (request: FastifyRequest): Promise<void>
}

async function auth (fastify: FastifyInstance, options: AuthOptions): Promise<void> {
  const service = createAuthService(fastify, options)
  const candidates = new WeakMap<FastifyRequest, Principal>()

  await fastify.register(jwt, {
    // The secret is looked up per token from its `sub`. A Buffer (not a string) is
    // returned on purpose: @fastify/jwt caches one verifier per *string* secret and
    // never evicts, which with a new secret at every login would grow without bound.
    secret: async (request: FastifyRequest, token: unknown) => {
      const sub = (token as { sub?: unknown } | null)?.sub
      const found = await fromDatabase('token secret lookup failed', () => service.secretFor(sub))
      if (found === undefined) throw new AuthError('Authorization token is invalid')
      candidates.set(request, found.principal)
      return found.secret
    },
    sign: { algorithm: 'HS256' },
    verify: { algorithms: ['HS256'] }
  })

  // @fastify/rate-limit lives in its own child context so that its route hook does not
  // reach the application's routes (the quota plugin registers its own instance).
  let throttle: LoginThrottle | undefined
  await fastify.register(async function failedLogins (child) {
    await child.register(rateLimit, { global: false })
    const limiter = child.createRateLimit({
      max: options.maxFailedLogins ?? 5,
      timeWindow: options.failedLoginWindowMs ?? 15 * 60_000,
      keyGenerator: (request) => `${request.ip}|${readCredentials(request)?.username ?? ''}`
    })
    throttle = {
      async retryAfter (request) {
        const state = await limiter(request, { increment: false })
        return state.isAllowed || state.remaining > 0 ? 0 : Math.max(1, state.ttlInSeconds)
      },
      async recordFailure (request) {
        await limiter(request)
      }
    }
  })

  fastify.decorate('auth', Object.assign(service, { loginThrottle: throttle! }))
  fastify.decorate('authenticate', async function authenticate (request: FastifyRequest, reply: FastifyReply) {
    try {
      // Node keeps the first of two Authorization fields and drops the other; a proxy in front
      // may read the last. Whoever the caller is must not depend on which one is read.
      if (fieldCount(request.raw.rawHeaders, 'authorization') > 1) throw new AuthError('the Authorization header must be sent once')
      if (!/^bearer /i.test(request.headers.authorization ?? '')) {
        throw new AuthError('send "Authorization: Bearer <token>" with a token from POST /v1/auth/token')
      }
      // Options are passed explicitly so that @fastify/jwt builds a verifier for this
      // call instead of consulting its unbounded per-secret cache. Every token this service
      // signs has sub and exp; one without them is not ours, whatever its signature.
      await request.jwtVerify({ algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] })
      const principal = candidates.get(request)
      if (principal === undefined) throw new AuthError('Authorization token is invalid')
      request.principal = principal
    } catch (error) {
      if (error instanceof AuthUnavailableError) throw error
      reply.header('WWW-Authenticate', 'Bearer')
      const message = error instanceof Error ? error.message : 'Authorization token is invalid'
      throw Object.assign(new AuthError(message), { cause: error })
    } finally {
      candidates.delete(request)
    }
  })
}

export default fp(auth, { name: 'auth', fastify: '5.x', dependencies: ['persistence', 'users'] })
