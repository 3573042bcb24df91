import { createServiceError } from './errors.js'
import { createSemaphore } from './semaphore.js'
import { hashPasswordHash, verifyPasswordHash } from './password.js'

export interface PasswordVerifierOptions {
  /** argon2 verifications running at once [1] */
  concurrency?: number
  /** verifications allowed to wait for a turn; past this a login is refused as busy [32] */
  maxWaiting?: number
}

/** Too many logins are waiting for a password check: a 503 with Retry-After, nothing checked. */
export class LoginBusyError extends createServiceError('LOGIN_BUSY', 503, 'too many logins are being checked right now; try again in a second') {
  readonly headers = { 'retry-after': '1' }
}

/**
 * argon2 runs on libuv's thread pool (four threads unless UV_THREADPOOL_SIZE says
 * otherwise), the pool that file writes and DNS lookups of image downloads also need:
 * unbounded, a burst of logins (bogus ones included: unknown users still cost a dummy
 * verification) would make every download wait behind it, and hold 19 MiB per
 * verification. Here at most `concurrency` verifications run at once and a bounded
 * number wait; the rest are turned away at once instead of queueing without end.
 */
export function createPasswordVerifier (options: PasswordVerifierOptions = {}) {
  const concurrency = options.concurrency ?? 1
  const maxWaiting = options.maxWaiting ?? 32
  const slots = createSemaphore(concurrency)
  let peak = 0
  // Verifying against a real hash for unknown users too keeps "no such user" and
  // "wrong password" indistinguishable by timing as well as by answer.
  const dummyHash = hashPasswordHash('0'.repeat(64))

  return {
    /** Whether `passwordHash` matches `stored`; with no stored hash, a dummy check of the same cost and false. */
    async verify (stored: string | null | undefined, passwordHash: string): Promise<boolean> {
      const against = stored ?? await dummyHash
      if (slots.held >= concurrency && slots.waiting >= maxWaiting) throw new LoginBusyError('password verification queue is full')
      await slots.acquire()
      peak = Math.max(peak, slots.held)
      try {
        const ok = await verifyPasswordHash(against, passwordHash)
        return ok && stored != null
      } finally {
        slots.release()
      }
    },
    /** the most verifications that have run at once (for tests and metrics) */
    get peakConcurrency (): number { return peak }
  }
}

export type PasswordVerifier = ReturnType<typeof createPasswordVerifier>
