import { readFile } from 'node:fs/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { parseUsersFile, type UserEntry } from '../db/users-file.js'
import { createUsers } from '../db/users.js'
import { createTokens } from '../db/tokens.js'
import { hashPasswordHash, needsRehash, sha256Hex, verifyPasswordHash } from '../lib/password.js'

export type { UserWithPassword } from '../db/users.js'

export interface UsersOptions {
  /** users.txt to make true at registration; nothing is imported when absent */
  usersFile?: string
  /** the plan names users may have */
  plans: readonly string[]
}

export interface ImportSummary {
  created: number
  updated: number
  /** users no longer in the file: they cannot log in and their tokens stopped working */
  disabled: number
}

export function createUsersService (fastify: FastifyInstance) {
  const { db, engine } = fastify.persistence
  const users = createUsers(db)
  const tokens = createTokens(db, engine)

  return {
    findByUsername: users.findByUsername,
    findById: users.findById,

    /**
     * Makes the database say what `entries` say. A hash is recomputed only when the
     * password or the hashing parameters changed, so restarts are cheap; a changed password
     * revokes the user's tokens (a new password means the old sessions end too); users
     * missing from `entries` are disabled: no login, tokens revoked, history kept.
     */
    async upsert (entries: readonly UserEntry[]): Promise<ImportSummary> {
      const summary: ImportSummary = { created: 0, updated: 0, disabled: 0 }
      const listed = new Set<string>()
      for (const entry of entries) {
        listed.add(entry.username)
        const passwordHash = sha256Hex(entry.password)
        const existing = await users.findByUsername(entry.username)
        const samePassword = existing?.passwordhash != null && await verifyPasswordHash(existing.passwordhash, passwordHash)
        const keepHash = samePassword && !needsRehash(existing!.passwordhash!)
        const passwordhash = keepHash ? existing!.passwordhash! : await hashPasswordHash(passwordHash)
        if (existing !== undefined && keepHash && existing.plan === entry.plan) continue
        const userid = await users.save({ username: entry.username, plan: entry.plan, passwordhash }, existing)
        if (existing === undefined) summary.created++
        else summary.updated++
        if (existing?.passwordhash != null && !samePassword) await tokens.revoke([userid])
      }
      const gone = (await users.all()).filter((user) => user.passwordhash !== null && !listed.has(user.username))
      const ids = gone.map((user) => user.userid)
      await users.disable(ids)
      await tokens.revoke(ids)
      summary.disabled = ids.length
      return summary
    },

    async importFile (path: string, plans: readonly string[]): Promise<ImportSummary> {
      const text = await readFile(path, 'utf8')
      return await this.upsert(parseUsersFile(text, plans, path))
    }
  }
}

export type UsersService = ReturnType<typeof createUsersService>

declare module 'fastify' {
  interface FastifyInstance {
    /** The users of image-dump: lookups and the users.txt import. */
    imageDumpUsers: UsersService
  }
}

export default fp(async function users (fastify: FastifyInstance, options: UsersOptions) {
  const service = createUsersService(fastify)
  fastify.decorate('imageDumpUsers', service)
  if (options.usersFile !== undefined) {
    const summary = await service.importFile(options.usersFile, options.plans)
    fastify.log.info({ usersFile: options.usersFile, ...summary }, 'users imported')
  }
}, { name: 'users', fastify: '5.x', dependencies: ['persistence'] })
