import { createHash } from 'node:crypto'
import argon2 from 'argon2'

// What a client sends at login is the SHA-256 of its password: that value is itself
// password-equivalent, so only a salted, memory-hard hash of it is ever stored.
// argon2id with the OWASP-recommended minimum (19 MiB, 2 passes) keeps a login at a
// few tens of milliseconds; the PHC string records the parameters, so they can be
// raised later and old hashes still verify.
const OPTIONS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const

const HEX64 = /^[0-9a-f]{64}$/i

/** Lowercase hex SHA-256 of the UTF-8 password: what a client sends as `passwordHash`. */
export function sha256Hex (text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('hex')
}

export function isPasswordHash (value: string): boolean {
  return HEX64.test(value)
}

export async function hashPasswordHash (passwordHash: string): Promise<string> {
  return await argon2.hash(passwordHash.toLowerCase(), OPTIONS)
}

/** Constant-time by construction (argon2 compares digests in constant time). */
export async function verifyPasswordHash (stored: string, passwordHash: string): Promise<boolean> {
  try {
    return await argon2.verify(stored, passwordHash.toLowerCase())
  } catch {
    return false // a malformed stored hash never authenticates anyone
  }
}

export function needsRehash (stored: string): boolean {
  return argon2.needsRehash(stored, OPTIONS)
}
