import fp from 'fastify-plugin'
import { sql, type Kysely } from 'kysely'
import type { FastifyInstance } from 'fastify'
import { connect } from '../db/connect.js'
import { migrateToLatest } from '../db/migrate.js'
import type { Database, Engine } from '../db/schema.js'

export interface PersistenceOptions {
  /** `mysql://user:pass@host:port/db` or `sqlite:<path>` */
  databaseUrl: string
  /** run migrations at registration (default true) */
  migrate?: boolean
  poolSize?: number
}

export type HealthReport = { ok: true } | { ok: false, problem: string }

export function createPersistence (db: Kysely<Database>, engine: Engine) {
  return {
    db,
    engine,
    /** One round trip to the database, bounded so a hung server cannot hang the probe. */
    async health (timeoutMs = 2000): Promise<HealthReport> {
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs)
      })
      try {
        await Promise.race([sql`SELECT 1`.execute(db), deadline])
        return { ok: true }
      } catch (error) {
        return { ok: false, problem: `database unreachable: ${error instanceof Error ? error.message : String(error)}` }
      } finally {
        clearTimeout(timer)
      }
    }
  }
}

export type Persistence = ReturnType<typeof createPersistence>

declare module 'fastify' {
  interface FastifyInstance {
    persistence: Persistence
  }
}

async function persistence (fastify: FastifyInstance, options: PersistenceOptions): Promise<void> {
  const { db, engine } = connect(options.databaseUrl, { poolSize: options.poolSize })
  try {
    if (options.migrate !== false) await migrateToLatest(db)
  } catch (error) {
    await db.destroy()
    throw error
  }
  fastify.decorate('persistence', createPersistence(db, engine))
  fastify.addHook('onClose', async () => { await db.destroy() })
}

export default fp(persistence, { name: 'persistence', fastify: '5.x' })
