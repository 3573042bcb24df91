import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { buildApp } from '../../app.js'
import { loadConfig, type Config } from '../../config.js'
import { sha256Hex } from '../../lib/password.js'
import type { Engine } from '../../db/schema.js'
import { createTestDatabase, type TestDatabase } from './db.js'

export { sampleUsers } from './users.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface TestApp {
  app: FastifyInstance
  config: Config
  database: TestDatabase
  storageDir: string
}

/**
 * The whole service on a fresh database and a fresh storage folder, built from the same
 * configuration loader production uses; `env` overrides variables as an operator would,
 * `server` Fastify's options (e.g. a logger stream to read the log).
 */
export async function buildTestApp (t: Teardown, engine: Engine, env: Record<string, string> = {}, database?: TestDatabase, server: FastifyServerOptions = {}): Promise<TestApp> {
  const db = database ?? await createTestDatabase(engine)
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-images-'))
  const config = loadConfig({
    DATABASE_URL: db.url,
    STORAGE_DIR: storageDir,
    USERS_FILE: new URL('../../users.txt', import.meta.url).pathname,
    LOG_LEVEL: 'silent',
    ALLOW_PRIVATE_NETWORKS: 'true',
    // Tests drive the app with inject(), one long task after another with no wait between:
    // by its event loop, such a process is saturated, and would shed on a loaded machine.
    // The delay check is tested on its own (test/plugins/load-shedding.test.ts); the heap check stays.
    MAX_EVENT_LOOP_DELAY_MS: '0',
    ...env
  })
  const app = await buildApp(config, server)
  t.teardown(async () => {
    await app.close()
    if (database === undefined) await db.drop()
    await rm(storageDir, { recursive: true, force: true })
  })
  return { app, config, database: db, storageDir }
}

export async function login (app: FastifyInstance, username: string, password: string): Promise<string> {
  const response = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username, passwordHash: sha256Hex(password) } })
  if (response.statusCode !== 200) throw new Error(`login as ${username} failed: ${response.statusCode} ${response.body}`)
  return response.json().access_token
}
