import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import { createConnection } from 'mysql2/promise'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

// Three server processes share one MariaDB database, as instances behind a load balancer
// would; the quota must hold across them because admission is one transaction there.

if (process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === '') {
  t.comment('multi-instance quota tests skipped: MYSQL_URL is not set')
} else {
  const database = await createTestDatabase('mysql')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-instances-'))
  const origin = await startOrigin()
  const agent = new Agent({ connections: 64 })
  const servers: ServerProcess[] = []
  t.teardown(async () => {
    await Promise.all(servers.map((server) => server.stop()))
    await agent.close()
    await origin.close()
    await database.drop()
    await rm(storageDir, { recursive: true, force: true })
  })

  const env = { DATABASE_URL: database.url, STORAGE_DIR: storageDir, ALLOW_PRIVATE_NETWORKS: 'true' }
  // The first instance migrates and imports users; the other two then start together.
  servers.push(await startServerProcess(env))
  servers.push(...await Promise.all([startServerProcess(env), startServerProcess(env)]))

  const call = async (server: ServerProcess, method: 'GET' | 'POST', path: string, headers: Record<string, string>, body?: string) => {
    const response = await request(`${server.baseUrl}${path}`, { method, headers, body, dispatcher: agent })
    return { status: response.statusCode, headers: response.headers, body: await response.body.text() }
  }

  async function tokenFor (user: { username: string, password: string }): Promise<string> {
    const response = await call(servers[0]!, 'POST', '/v1/auth/token', { 'content-type': 'application/json' },
      JSON.stringify({ username: user.username, passwordHash: sha256Hex(user.password) }))
    return JSON.parse(response.body).access_token
  }

  async function rowsOf (username: string): Promise<number> {
    const conn = await createConnection({ uri: database.url })
    const [rows] = await conn.query('SELECT COUNT(*) AS n FROM requests r JOIN users u ON u.userid = r.userid WHERE u.username = ?', [username])
    await conn.end()
    return Number((rows as Array<{ n: number }>)[0]!.n)
  }

  for (const [user, limit] of [[sampleUsers.bronze, 25], [sampleUsers.silver, 50]] as const) {
    t.test(`120 concurrent dumps from one ${user.username} (limit ${limit}) round-robin over three instances admit exactly ${limit}`, async (t) => {
      const token = await tokenFor(user)
      const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' }
      const body = JSON.stringify({ items: [{ name: 'x', images: [origin.url('/png/1')] }] })
      const started = process.hrtime.bigint()
      const responses = await Promise.all(Array.from({ length: 120 }, (_, i) => call(servers[i % 3]!, 'POST', '/v1/dumps', headers, body)))
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      const admitted = responses.filter((r) => r.status === 200)
      const refused = responses.filter((r) => r.status === 429)
      t.equal(admitted.length, limit, 'admitted')
      t.equal(refused.length, 120 - limit, 'refused')
      t.equal(await rowsOf(user.username), limit, 'exactly that many log rows')
      t.ok(refused.every((r) => Number(r.headers['retry-after']) > 0), 'every refusal says when to retry')
      const perInstance = servers.map((_, s) => responses.filter((r, i) => i % 3 === s && r.status === 200).length)
      t.comment(`admissions per instance: ${perInstance.join(', ')}; 120 decisions in ${seconds.toFixed(2)} s (${(120 / seconds).toFixed(0)} decisions/s, downloads included)`)

      const quota = JSON.parse((await call(servers[2]!, 'GET', '/v1/quota', { authorization: `Bearer ${token}` })).body)
      t.match(quota, { limit, used: limit, remaining: 0 }, 'every instance reports the same quota')
    })
  }
}
