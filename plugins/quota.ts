import { setTimeout as sleep } from 'node:timers/promises'
import fp from 'fastify-plugin'
import type { Kysely } from 'kysely'
import createError from '@fastify/error'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { createServiceError } from '../lib/errors.js'
import { createRequestLocks } from '../db/request-locks.js'
import { createRequestLookups, type KeyOwner } from '../db/request-lookups.js'
import { createRequests, type Executor, type RequestRecord } from '../db/requests.js'
import type { Quota } from '../schemas/quota.js'
import type { Database, Engine } from '../db/schema.js'
import type { Principal } from './auth.js'

export interface QuotaOptions {
  /** dumps admitted per rolling window, by plan name */
  plans: Record<string, number>
  /** the rolling window, in seconds (default 3600) */
  windowSeconds?: number
  /** attempts of an admission transaction that hits a deadlock or lock timeout (default 4) */
  maxAttempts?: number
  /**
   * MySQL: how long one attempt may wait for the user's row lock, in seconds (default 5).
   * The server's default of 50 s would hold a client that long before it hears anything.
   */
  lockWaitTimeoutSeconds?: number
  /** how long an Idempotency-Key names the dump admitted with it, in seconds (default 24 h) */
  idempotencyKeySeconds?: number
}

/** What the log row of an admitted request holds; set by the route before the quota check. */
export type QuotaRecord = RequestRecord

export interface Admission {
  admitted: boolean
  /** rows in the window, counting this one when admitted (or as if admitted when not) */
  current: number
  /** milliseconds until the oldest counted row leaves the window */
  ttlMs: number
  requestId?: number
  /**
   * The dump the request's idempotency key already names (same user, within the key's
   * lifetime): nothing was inserted and no slot taken. `current` then counts the window
   * without this request.
   */
  replayOf?: KeyOwner
}

/** What GET /v1/quota answers: its schema is the one definition. */
export type Usage = Quota

/** `message` may quote the database's error, which is for the log; the client hears the public words. */
export class QuotaUnavailableError extends createServiceError('QUOTA_UNAVAILABLE', 503, 'the quota cannot be checked right now; nothing was admitted, try again') {}

// MySQL/MariaDB errors that mean "try the transaction again": deadlock, lock wait timeout.
const TRANSIENT = new Set([1213, 1205])

function isTransient (error: unknown): boolean {
  const { errno, code } = (error ?? {}) as { errno?: unknown, code?: unknown }
  // SQLite: another process (WORKERS) held the write lock past the busy timeout
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return true
  return typeof errno === 'number' && TRANSIENT.has(errno)
}

/** Thrown inside an admission transaction to roll its insert back; carries the refusal. */
class Refusal {
  constructor (readonly admission: Admission) {}
}

/**
 * The quota as plain functions over the request log. Admission is one transaction under
 * the user's admission lock: count the user's rows of the last window by the database
 * clock (at a cost that does not grow with them: db/request-lookups.ts), and insert the new row,
 * numbered, only when under the limit. Every
 * instance sharing the database serialises on that row lock, so the limit holds across
 * processes, and nothing is kept in memory, so a restart forgets nothing.
 */
export function createQuotaService (db: Kysely<Database>, engine: Engine, options: QuotaOptions) {
  const windowSeconds = options.windowSeconds ?? 3600
  const maxAttempts = options.maxAttempts ?? 4
  const lockWaitTimeout = Math.max(1, Math.round(options.lockWaitTimeoutSeconds ?? 5))
  const keySeconds = options.idempotencyKeySeconds ?? 24 * 3600
  const requests = createRequests(db, engine)
  const lookups = createRequestLookups(db, engine)
  const locks = createRequestLocks(db, engine)

  function limitFor (plan: string): number {
    const limit = Object.hasOwn(options.plans, plan) ? options.plans[plan] : undefined
    if (limit === undefined) throw new QuotaUnavailableError(`no quota is configured for plan "${plan}"`)
    return limit
  }

  async function countThenInsert (trx: Executor, userid: number, limit: number, record: QuotaRecord): Promise<Admission> {
    const { count, ttlMs, next } = await lookups.window(trx, userid, windowSeconds, limit)
    if (count >= limit) return { admitted: false, current: count + 1, ttlMs }
    const requestId = await requests.insert(trx, userid, record, next)
    return { admitted: true, current: count + 1, ttlMs: count === 0 ? windowSeconds * 1000 : ttlMs, requestId }
  }

  /**
   * With an idempotency key the row is inserted before the limit is applied: the unique
   * index on (userid, key) decides whether the key is new (then the insert is rolled back
   * when it would pass the limit) or already names a dump (then that dump is the answer,
   * whatever the quota: a replay takes no slot).
   */
  async function insertThenCount (trx: Executor, userid: number, limit: number, record: QuotaRecord, key: string): Promise<Admission> {
    // a key past its lifetime no longer names its old dump: this admission takes it over
    await requests.releaseExpiredKey(trx, userid, key, keySeconds)
    const { count, ttlMs, next } = await lookups.window(trx, userid, windowSeconds, limit)
    const requestId = await requests.insertUnlessKeyTaken(trx, userid, record, next)
    if (requestId === undefined) {
      const owner = await lookups.keyOwner(trx, userid, key)
      // the user's admission lock is held: the row the index found cannot have gone since
      if (owner === undefined) throw new Error(`idempotency key of user ${userid} refused as taken, yet it names no dump`)
      return { admitted: false, current: count, ttlMs, replayOf: owner }
    }
    if (count >= limit) throw new Refusal({ admitted: false, current: count + 1, ttlMs })
    return { admitted: true, current: count + 1, ttlMs: count === 0 ? windowSeconds * 1000 : ttlMs, requestId }
  }

  async function admitOnce (userid: number, limit: number, record: QuotaRecord): Promise<Admission> {
    let admission: Admission | 'no such user'
    try {
      admission = await locks.underUserLock(userid, lockWaitTimeout, async (trx) => record.idempotency === undefined
        ? await countThenInsert(trx, userid, limit, record)
        : await insertThenCount(trx, userid, limit, record, record.idempotency.key))
    } catch (error) {
      if (error instanceof Refusal) return error.admission
      throw error
    }
    if (admission === 'no such user') throw new QuotaUnavailableError(`user ${userid} does not exist`)
    return admission
  }

  return {
    windowSeconds,
    /** how long an idempotency key names its dump, in seconds */
    idempotencyKeySeconds: keySeconds,
    limitFor,

    /**
     * Admits and logs one request, refuses it, or finds the dump its idempotency key
     * already names (`replayOf`); never admits past the limit, never fails open.
     */
    async admit (userid: number, limit: number, record: QuotaRecord): Promise<Admission> {
      for (let attempt = 1; ; attempt++) {
        try {
          return await admitOnce(userid, limit, record)
        } catch (error) {
          if (error instanceof QuotaUnavailableError) throw error
          if (isTransient(error) && attempt < maxAttempts) {
            await sleep(5 * 2 ** attempt + Math.random() * 20)
            continue
          }
          const reason = error instanceof Error ? error.message : String(error)
          throw new QuotaUnavailableError(`the quota cannot be checked right now (${reason}); nothing was admitted, try again`, {
            cause: error,
            publicMessage: 'the quota cannot be checked right now: the database is unavailable or busy; nothing was admitted, try again'
          })
        }
      }
    },

    async usage (principal: Principal): Promise<Usage> {
      const limit = limitFor(principal.plan)
      const { count, ttlMs } = await lookups.window(db, principal.userid, windowSeconds, limit)
      return {
        plan: principal.plan,
        limit,
        used: count,
        remaining: Math.max(0, limit - count),
        resetSeconds: count < limit ? 0 : Math.ceil(ttlMs / 1000),
        windowSeconds
      }
    }
  }
}

export type QuotaService = ReturnType<typeof createQuotaService> & {
  /**
   * preHandler for a route under quota: admits (and logs) the request or answers 429; a
   * request whose idempotency key already names a dump is neither, but its replay
   * (`request.idempotentReplayOf`), for the route to answer
   */
  enforce: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    quota: QuotaService
  }
  interface FastifyRequest {
    /** the log row to write if this request is admitted; set before quota.enforce runs */
    quotaRecord: QuotaRecord | null
    /** the id of the `requests` row written when this request was admitted (throws before) */
    readonly admittedRequestId: number
    /** the dump this request's idempotency key already named, when quota.enforce found one instead of admitting */
    readonly idempotentReplayOf: KeyOwner | undefined
  }
}

export class QuotaExceededError extends createError<'QUOTA_EXCEEDED', 429, [message: string]>('QUOTA_EXCEEDED', '%s', 429) {
  constructor (message: string, readonly headers: Record<string, string>) {
    super(message)
  }
}

/**
 * Admission is a preHandler of its own rather than @fastify/rate-limit with a custom store:
 * that plugin adds its `rateLimit` decorator only when none exists, so in an app that
 * already registered it the quota would silently run on the app's in-memory store and
 * fail open; and its store sees a key, not the request, which needed a map from keys back
 * to requests that outlived aborted ones. Here the hook holds the request itself.
 */
async function quota (fastify: FastifyInstance, options: QuotaOptions): Promise<void> {
  const service = createQuotaService(fastify.persistence.db, fastify.persistence.engine, options)

  // dies with its request, whether it was answered, aborted or timed out
  const admitted = new WeakMap<FastifyRequest, number>()
  const replays = new WeakMap<FastifyRequest, KeyOwner>()
  fastify.decorateRequest('quotaRecord', null)
  fastify.decorateRequest('admittedRequestId', {
    getter (this: FastifyRequest): number {
      const id = admitted.get(this)
      if (id === undefined) throw new Error('this request was not admitted: run quota.enforce as its preHandler')
      return id
    }
  })
  fastify.decorateRequest('idempotentReplayOf', {
    getter (this: FastifyRequest): KeyOwner | undefined {
      return replays.get(this)
    }
  })

  async function enforce (request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const { userid, plan } = request.principal
    const limit = service.limitFor(plan)
    const record = request.quotaRecord ?? { dataformat: request.bodyFormat ?? 'json', data: null }
    const admission = await service.admit(userid, limit, record)
    const seconds = Math.max(1, Math.ceil(admission.ttlMs / 1000))
    const headers = {
      'ratelimit-limit': String(limit),
      'ratelimit-remaining': String(Math.max(0, limit - admission.current)),
      'ratelimit-reset': String(seconds)
    }
    if (admission.replayOf !== undefined) {
      // nothing admitted: the route answers with the dump the key names
      replays.set(request, admission.replayOf)
      reply.headers(headers)
      return
    }
    if (!admission.admitted) {
      throw new QuotaExceededError(
        `quota exceeded: the ${plan} plan allows ${limit} dumps per ${service.windowSeconds / 60} minutes; the next slot frees in ${seconds} s`,
        { ...headers, 'retry-after': String(seconds) })
    }
    admitted.set(request, admission.requestId!)
    reply.headers(headers)
  }

  fastify.decorate('quota', Object.assign(service, { enforce }))
}

export default fp(quota, { name: 'quota', fastify: '5.x', dependencies: ['persistence', 'auth'] })
