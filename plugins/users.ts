import { readFile } from 'node:fs/promises'
import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { parseUsersFile, type UserEntry } from '../db/users-file.js'
import { hashPasswordHash, needsRehash, sha256Hex, verifyPasswordHash } from '../lib/password.js'

export interface UsersOptions {
  /** users.txt to upsert at registration; nothing is imported when absent */
  usersFile?: string
  /** the plan names users may have */
  plans: readonly string[]
}

export interface UserWithPassword {
  userid: number
  username: string
  plan: string
  passwordhash: string | null
}

export function createUsersRepository (fastify: FastifyInstance) {
  const { db } = fastify.persistence
  return {
    async findByUsername (username: string): Promise<UserWithPassword | undefined> {
      return await db.selectFrom('users')
        .leftJoin('authentication', 'authentication.userid', 'users.userid')
        .select(['users.userid', 'users.username', 'users.plan', 'authentication.passwordhash'])
        .where('users.username', '=', username)
        .executeTakeFirst()
    },

    async findById (userid: number): Promise<{ userid: number, username: string, plan: string } | undefined> {
      return await db.selectFrom('users').select(['userid', 'username', 'plan']).where('userid', '=', userid).executeTakeFirst()
    },

    /**
     * Creates or updates each user and its password hash. A hash is recomputed only
     * when the password or the hashing parameters changed, so restarts are cheap and
     * do not churn the table.
     */
    async upsert (entries: readonly UserEntry[]): Promise<{ created: number, updated: number }> {
      let created = 0
      let updated = 0
      for (const entry of entries) {
        const passwordHash = sha256Hex(entry.password)
        const existing = await this.findByUsername(entry.username)
        const keepHash = existing?.passwordhash != null && !needsRehash(existing.passwordhash) &&
          await verifyPasswordHash(existing.passwordhash, passwordHash)
        const newHash = keepHash ? existing!.passwordhash! : await hashPasswordHash(passwordHash)
        await db.transaction().execute(async (trx) => {
          let userid = existing?.userid
          if (userid === undefined) {
            const result = await trx.insertInto('users').values({ username: entry.username, plan: entry.plan }).executeTakeFirstOrThrow()
            userid = Number(result.insertId)
            created++
          } else if (existing!.plan !== entry.plan || !keepHash) {
            await trx.updateTable('users').set({ plan: entry.plan }).where('userid', '=', userid).execute()
            updated++
          }
          if (existing?.passwordhash == null) {
            await trx.insertInto('authentication').values({ userid, passwordhash: newHash }).execute()
          } else if (!keepHash) {
            await trx.updateTable('authentication').set({ passwordhash: newHash }).where('userid', '=', userid).execute()
          }
        })
      }
      return { created, updated }
    },

    async importFile (path: string, plans: readonly string[]): Promise<{ created: number, updated: number }> {
      const text = await readFile(path, 'utf8')
      return await this.upsert(parseUsersFile(text, plans, path))
    }
  }
}

export type UsersRepository = ReturnType<typeof createUsersRepository>

declare module 'fastify' {
  interface FastifyInstance {
    users: UsersRepository
  }
}

export default fp(async function users (fastify: FastifyInstance, options: UsersOptions) {
  const repository = createUsersRepository(fastify)
  fastify.decorate('users', repository)
  if (options.usersFile !== undefined) {
    const { created, updated } = await repository.importFile(options.usersFile, options.plans)
    fastify.log.info({ usersFile: options.usersFile, created, updated }, 'users imported')
  }
}, { name: 'users', fastify: '5.x', dependencies: ['persistence'] })
