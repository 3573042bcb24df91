import type { Kysely } from 'kysely'
import type { Database } from './schema.js'

export interface UserWithPassword {
  userid: number
  username: string
  plan: string
  /** null when the user may not log in (removed from users.txt) */
  passwordhash: string | null
}

/**
 * The `users` and `authentication` tables' owner. A user is never deleted (their logged
 * dumps refer to them); one taken out of users.txt loses their password row instead, and
 * with it the ability to log in.
 */
export function createUsers (db: Kysely<Database>) {
  return {
    /** The user with exactly this name (byte for byte, whatever the database's collation). */
    async findByUsername (username: string): Promise<UserWithPassword | undefined> {
      const row = await db.selectFrom('users')
        .leftJoin('authentication', 'authentication.userid', 'users.userid')
        .select(['users.userid', 'users.username', 'users.plan', 'authentication.passwordhash'])
        .where('users.username', '=', username)
        .executeTakeFirst()
      // the migration makes the column binary on MySQL; this holds on a database that missed it
      return row !== undefined && row.username === username ? row : undefined
    },

    async findById (userid: number): Promise<{ userid: number, username: string, plan: string } | undefined> {
      return await db.selectFrom('users').select(['userid', 'username', 'plan']).where('userid', '=', userid).executeTakeFirst()
    },

    /** Every user, with their password hash (null when they may not log in). */
    async all (): Promise<UserWithPassword[]> {
      return await db.selectFrom('users')
        .leftJoin('authentication', 'authentication.userid', 'users.userid')
        .select(['users.userid', 'users.username', 'users.plan', 'authentication.passwordhash'])
        .execute()
    },

    /** Creates the user or updates plan and password hash; returns the user id. */
    async save (user: { username: string, plan: string, passwordhash: string }, existing: UserWithPassword | undefined): Promise<number> {
      return await db.transaction().execute(async (trx) => {
        let userid = existing?.userid
        if (userid === undefined) {
          const result = await trx.insertInto('users').values({ username: user.username, plan: user.plan }).executeTakeFirstOrThrow()
          userid = Number(result.insertId)
        } else if (existing!.plan !== user.plan) {
          await trx.updateTable('users').set({ plan: user.plan }).where('userid', '=', userid).execute()
        }
        if (existing?.passwordhash == null) {
          await trx.insertInto('authentication').values({ userid, passwordhash: user.passwordhash }).execute()
        } else if (existing.passwordhash !== user.passwordhash) {
          await trx.updateTable('authentication').set({ passwordhash: user.passwordhash }).where('userid', '=', userid).execute()
        }
        return userid
      })
    },

    /** These users can no longer log in. */
    async disable (userids: readonly number[]): Promise<void> {
      if (userids.length === 0) return
      await db.deleteFrom('authentication').where('userid', 'in', [...userids]).execute()
    }
  }
}

export type Users = ReturnType<typeof createUsers>
