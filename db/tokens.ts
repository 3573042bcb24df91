import { randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import { now } from './engine.js'
import type { Database, Engine } from './schema.js'

/** bytes of a user's signing secret */
export const SECRET_BYTES = 32

export interface TokenOwner {
  userid: number
  username: string
  plan: string
}

/**
 * The `tokens` table's owner: one signing secret per user, replaced at every login, so a
 * new login invalidates every token signed before it; deleting it revokes them all.
 */
export function createTokens (db: Kysely<Database>, engine: Engine) {
  return {
    /** A new random secret for the user, stored in place of the old one. */
    async rotate (userid: number): Promise<Buffer> {
      const secret = randomBytes(SECRET_BYTES)
      const insert = db.insertInto('tokens').values({ userid, user_secret: secret, last_updated: now(engine) })
      await (engine === 'mysql'
        ? insert.onDuplicateKeyUpdate({ user_secret: secret, last_updated: now(engine) })
        : insert.onConflict((oc) => oc.column('userid').doUpdateSet({ user_secret: secret, last_updated: now(engine) }))
      ).execute()
      return secret
    },

    /** The user's current secret and who they are, or undefined when they have no usable secret. */
    async secretOf (userid: number): Promise<{ secret: Buffer, owner: TokenOwner } | undefined> {
      const row = await db.selectFrom('tokens')
        .innerJoin('users', 'users.userid', 'tokens.userid')
        .select(['tokens.user_secret', 'users.userid', 'users.username', 'users.plan'])
        .where('tokens.userid', '=', userid)
        .executeTakeFirst()
      // An empty key made old fast-jwt versions skip the signature check; whatever the
      // version, a row without a full-length secret authenticates nobody.
      if (row === undefined || row.user_secret == null || row.user_secret.length < SECRET_BYTES) return undefined
      return { secret: Buffer.from(row.user_secret), owner: { userid: row.userid, username: row.username, plan: row.plan } }
    },

    /** Every token of these users stops working at once. */
    async revoke (userids: readonly number[]): Promise<void> {
      if (userids.length === 0) return
      await db.deleteFrom('tokens').where('userid', 'in', [...userids]).execute()
    }
  }
}

export type Tokens = ReturnType<typeof createTokens>
