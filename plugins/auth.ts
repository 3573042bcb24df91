import { randomBytes } from 'node:crypto'
import createError from '@fastify/error'
import fp from 'fastify-plugin'
import fastifyJwt, { type JWT } from '@fastify/jwt'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { createLoginAttempts } from '../db/login-attempts.js'
import { createServiceError } from '../lib/errors.js'
import { fieldCount } from '../lib/header-fields.js'
import { createTokens, SECRET_BYTES, type TokenOwner } from '../db/tokens.js'
import { createLoginThrottle, type LoginThrottleOptions } from '../lib/login-throttle.js'
import { createPasswordVerifier, type PasswordVerifierOptions } from '../lib/password-verifier.js'
import type { TokenResponse } from '../schemas/auth.js'

export { LoginBusyError } from '../lib/password-verifier.js'

export interface AuthOptions {
  /** token lifetime in seconds (TOKEN_EXPIRY) */
  tokenExpirySeconds: number
  /** how failed logins are slowed down (5 per username and 30 per network, per 15 minutes) */
  throttle?: LoginThrottleOptions
  /** how much password checking may run at once (1 at a time, 32 waiting) */
  passwordVerification?: PasswordVerifierOptions
}

/** Who a verified token belongs to. */
export type Principal = TokenOwner

export const INVALID_CREDENTIALS = 'invalid username or password'
/**
 * The one answer to a token that is not ours: malformed, forged, signed with another
 * algorithm or key, or naming a user who does not exist. Telling these apart would tell
 * an attacker which user ids exist.
 */
export const INVALID_TOKEN = 'Authorization token is invalid'
const HOW_TO_AUTHENTICATE = 'send "Authorization: Bearer <token>" with a token from POST /v1/auth/token'

export class AuthError extends createError<'UNAUTHORIZED', 401, [message: string, options?: { cause: unknown }]>('UNAUTHORIZED', '%s', 401) {
  readonly headers = { 'www-authenticate': 'Bearer' }
}

/**
 * The database could not be asked about a token or a login: no verdict on the credentials,
 * so not a 401 (a client would throw away a good token), and not the database's own words
 * (they name its host and port).
 */
export class AuthUnavailableError extends createServiceError('AUTH_UNAVAILABLE', 503, 'credentials cannot be checked right now: the database is unavailable or busy; try again') {}

async function fromDatabase<T> (what: string, query: () => Promise<T>): Promise<T> {
  try {
    return await query()
  } catch (error) {
    throw new AuthUnavailableError(`${what}: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
}

export type LoginResult =
  | { outcome: 'token', token: TokenResponse }
  | { outcome: 'refused' }
  | { outcome: 'throttled', retryAfterSeconds: number, message: string }

/**
 * Node keeps a limited number of a request's header fields and silently drops the rest
 * (about 1000 when the server's `maxHeadersCount` is unset; none are dropped when it is 0),
 * so a second Authorization field pushed past that count would not be seen. A request that
 * may have reached the count is refused instead of trusted; counted conservatively, since
 * Node's own count is not documented as fields or as name/value entries.
 */
function mayHaveDroppedFields (request: FastifyRequest): boolean {
  const server = (request.raw.socket as { server?: { maxHeadersCount?: number | null } } | null)?.server
  const max = server?.maxHeadersCount
  if (max === 0) return false
  const limit = max === undefined || max === null ? 1000 : Math.floor(max / 2)
  return request.raw.rawHeaders.length / 2 >= limit
}

// fast-jwt failures that happen only after a valid signature: they cannot be produced by a
// forger, and telling a client its genuine token expired is useful
const GENUINE_TOKEN_FAILURES: Readonly<Record<string, string | undefined>> = {
  FAST_JWT_EXPIRED: 'Authorization token expired',
  FAST_JWT_INACTIVE: undefined,
  FAST_JWT_INVALID_CLAIM_TYPE: undefined,
  FAST_JWT_INVALID_CLAIM_VALUE: undefined,
  FAST_JWT_MISSING_REQUIRED_CLAIM: undefined
}

function tokenFailure (error: unknown): AuthError {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string' && Object.hasOwn(GENUINE_TOKEN_FAILURES, code)) {
    return new AuthError(GENUINE_TOKEN_FAILURES[code] ?? (error as Error).message, { cause: error })
  }
  return new AuthError(INVALID_TOKEN, { cause: error })
}

export function createAuthService (fastify: FastifyInstance, options: AuthOptions, jwt: JWT) {
  const { db, engine } = fastify.persistence
  const tokens = createTokens(db, engine)
  const throttle = createLoginThrottle(createLoginAttempts(db, engine), options.throttle)
  const passwords = createPasswordVerifier(options.passwordVerification)
  // Tokens naming no user are checked against this key, so they fail exactly where and
  // how a forgery for a real user fails.
  const unknownUserKey = randomBytes(SECRET_BYTES)
  const principals = new WeakMap<FastifyRequest, Principal>()

  async function login (username: string, passwordHash: string, ip: string): Promise<LoginResult> {
    // counted before the password is checked, so a burst cannot pass together
    const verdict = await fromDatabase('login: throttle failed', () => throttle.attempt(ip, username))
    if (!verdict.allowed) return { outcome: 'throttled', retryAfterSeconds: verdict.retryAfterSeconds, message: verdict.reason }
    const user = await fromDatabase('login: user lookup failed', () => fastify.imageDumpUsers.findByUsername(username))
    if (!await passwords.verify(user?.passwordhash, passwordHash) || user === undefined) return { outcome: 'refused' }
    const secret = await fromDatabase('login: secret rotation failed', () => tokens.rotate(user.userid))
    await fromDatabase('login: throttle failed', () => throttle.succeeded(verdict.keys))
    const token = jwt.sign({ sub: String(user.userid) }, { key: secret, algorithm: 'HS256', expiresIn: options.tokenExpirySeconds })
    return { outcome: 'token', token: { access_token: token, token_type: 'Bearer', expires_in: options.tokenExpirySeconds } }
  }

  /** The verified owner of a bearer token; throws AuthError (401) or AuthUnavailableError (503). */
  async function verify (token: string): Promise<Principal> {
    let sub: unknown
    try {
      sub = (jwt.decode(token) as { sub?: unknown } | null)?.sub
    } catch (error) {
      throw new AuthError(INVALID_TOKEN, { cause: error })
    }
    const userid = typeof sub === 'string' && /^[1-9][0-9]{0,9}$/.test(sub) ? Number(sub) : undefined
    const found = userid === undefined ? undefined : await fromDatabase('token secret lookup failed', () => tokens.secretOf(userid))
    try {
      // Options are passed explicitly so that @fastify/jwt builds a verifier for this call
      // instead of keeping one per secret forever. Every token this service signs has sub
      // and exp; one without them is not ours, whatever its signature.
      jwt.verify(token, { key: found?.secret ?? unknownUserKey, algorithms: ['HS256'], requiredClaims: ['sub', 'exp'] })
    } catch (error) {
      throw tokenFailure(error)
    }
    if (found === undefined) throw new AuthError(INVALID_TOKEN)
    return found.owner
  }

  return {
    login,
    verify,

    /** onRequest/preHandler hook: 401 unless one valid Bearer token is presented; sets request.principal. */
    async authenticate (request: FastifyRequest, reply: FastifyReply): Promise<void> {
      try {
        // Node keeps the first of two Authorization fields and drops the other; a proxy in front
        // may read the last. Whoever the caller is must not depend on which one is read.
        if (mayHaveDroppedFields(request)) throw new AuthError('too many header fields: the Authorization header cannot be checked')
        if (fieldCount(request.raw.rawHeaders, 'authorization') > 1) throw new AuthError('the Authorization header must be sent once')
        const header = request.headers.authorization ?? ''
        if (!/^bearer /i.test(header)) throw new AuthError(HOW_TO_AUTHENTICATE)
        const parts = header.split(' ')
        if (parts.length !== 2 || parts[1] === '') throw new AuthError('Format is Authorization: Bearer [token]')
        principals.set(request, await verify(parts[1]!))
      } catch (error) {
        if (error instanceof AuthError) reply.header('www-authenticate', 'Bearer')
        throw error
      }
    },

    /** The principal `authenticate` verified for this request; throws when it did not run. */
    principalOf (request: FastifyRequest): Principal {
      const principal = principals.get(request)
      if (principal === undefined) throw new Error('this route reads the principal without authenticating: add imageDumpAuth.authenticate as its onRequest hook')
      return principal
    },

    /** for tests and metrics: the most password verifications that ran at once */
    get passwordPeakConcurrency (): number { return passwords.peakConcurrency }
  }
}

export type AuthService = ReturnType<typeof createAuthService>

declare module 'fastify' {
  interface FastifyInstance {
    /** Logins, token verification and the authenticate hook of image-dump. */
    imageDumpAuth: AuthService
  }
  interface FastifyRequest {
    /** Who presented the request's token; readable on routes that run imageDumpAuth.authenticate. */
    readonly principal: Principal
  }
}

/** A namespace for @fastify/jwt no other registration in this tree uses (a host may have its own). */
function freeNamespace (instance: FastifyInstance): string {
  const taken = (instance as unknown as { jwt?: Record<string, unknown> }).jwt
  let name = 'imageDump'
  for (let n = 2; taken?.[name] !== undefined; n++) name = `imageDump${n}`
  return name
}

async function auth (fastify: FastifyInstance, options: AuthOptions): Promise<void> {
  // @fastify/jwt lives in a child context of its own and under a namespace, so that its
  // request decorators (`user`, `jwtVerify`…) never reach the routes of an app that uses
  // @fastify/jwt itself; only its sign/decode/verify functions are used here, always with
  // the user's own key.
  let jwt: JWT | undefined
  await fastify.register(async function tokenSigning (child) {
    const namespace = freeNamespace(child)
    await child.register(fastifyJwt, {
      // never used: every call passes the user's secret as its key
      secret: randomBytes(SECRET_BYTES),
      namespace,
      decoratorName: `${namespace}Token`,
      sign: { algorithm: 'HS256' },
      verify: { algorithms: ['HS256'] }
    })
    jwt = (child.jwt as unknown as Record<string, JWT>)[namespace]
  })
  const service = createAuthService(fastify, options, jwt!)
  fastify.decorate('imageDumpAuth', service)
  fastify.decorateRequest('principal', {
    getter (this: FastifyRequest): Principal { return service.principalOf(this) }
  })
}

export default fp(auth, { name: 'auth', fastify: '5.x', dependencies: ['persistence', 'users'] })
