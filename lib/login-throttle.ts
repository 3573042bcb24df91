import { createHash } from 'node:crypto'
import { clientNetwork } from './ip.js'
import type { ThrottleStore } from '../db/login-attempts.js'

export interface LoginThrottleOptions {
  /** attempts one client network may make for one username per window [5] */
  maxPerUsername?: number
  /** attempts one client network may make across all usernames per window [30] */
  maxPerNetwork?: number
  windowSeconds?: number
}

export type Verdict =
  | { allowed: true, keys: { user: Buffer, network: Buffer } }
  | { allowed: false, retryAfterSeconds: number, reason: string }

const digest = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest()

/**
 * Slows down password guessing. Every attempt is counted *before* its password is
 * checked, twice: for the client's network and username (a guessed password), and for
 * the network alone (one address spraying many usernames). A success clears the
 * username's count and gives the network its attempt back, so people who log in often
 * from one office are not locked out by their own logins.
 *
 * Keys are hashed: the store never holds what was typed as a username (often a password
 * typed into the wrong field), and every key has the same small size whatever was sent.
 */
export function createLoginThrottle (store: ThrottleStore, options: LoginThrottleOptions = {}) {
  const maxPerUsername = options.maxPerUsername ?? 5
  const maxPerNetwork = options.maxPerNetwork ?? 30
  const windowSeconds = options.windowSeconds ?? 15 * 60
  let hits = 0

  return {
    windowSeconds,

    /** Counts one attempt and says whether its password may be checked. */
    async attempt (ip: string, username: string): Promise<Verdict> {
      const network = clientNetwork(ip)
      const keys = { network: digest(`net\0${network}`), user: digest(`user\0${network}\0${username}`) }
      const byNetwork = await store.hit(keys.network, windowSeconds)
      const byUser = await store.hit(keys.user, windowSeconds)
      // expired rows are cleared now and then by whoever is logging in, a slice at a time
      if (++hits % 256 === 0) await store.sweep(windowSeconds)
      const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000))
      if (byUser.attempts > maxPerUsername) {
        return { allowed: false, retryAfterSeconds: seconds(byUser.resetMs), reason: `too many failed logins; try again in ${seconds(byUser.resetMs)} s` }
      }
      if (byNetwork.attempts > maxPerNetwork) {
        return { allowed: false, retryAfterSeconds: seconds(byNetwork.resetMs), reason: `too many failed logins from this network; try again in ${seconds(byNetwork.resetMs)} s` }
      }
      return { allowed: true, keys }
    },

    /** A login succeeded: its username starts afresh and its network gets the attempt back. */
    async succeeded (keys: { user: Buffer, network: Buffer }): Promise<void> {
      await store.reset(keys.user)
      await store.refund(keys.network)
    }
  }
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>
