import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { connect } from '../db/connect.js'
import { sha256Hex } from '../lib/password.js'
import { startOrigin } from './helpers/origin.js'
import { startServerProcess } from './helpers/server-process.js'
import { sampleUsers } from './helpers/users.js'

const dir = await mkdtemp(join(tmpdir(), 'image-dump-server-'))
t.teardown(() => rm(dir, { recursive: true, force: true }))
const env = (name: string) => ({ DATABASE_URL: `sqlite:${join(dir, `${name}.db`)}`, STORAGE_DIR: join(dir, name), ALLOW_PRIVATE_NETWORKS: 'true' })

t.test('a bad configuration value stops the start, naming the variable', async (t) => {
  await t.rejects(startServerProcess({ ...env('config'), TOKEN_EXPIRY: 'twenty minutes' }),
    { message: /exited \(78\) before listening:\nimage-dump: configuration error: TOKEN_EXPIRY="twenty minutes" is invalid: expected a positive number of seconds/ })
})

t.test('a bad users file stops the start, naming the line', async (t) => {
  const usersFile = join(dir, 'users.txt')
  await writeFile(usersFile, 'username,password,plan\nann,pw,gold\nbob,pw,diamond\n')
  await t.rejects(startServerProcess({ ...env('users'), USERS_FILE: usersFile }),
    { message: /exited \(1\) before listening:\nimage-dump: failed to start: .*users\.txt line 3: unknown plan "diamond"/ })
})

t.test('with WORKERS, a worker that cannot start fails the start: the supervisor exits 1', async (t) => {
  // the port is taken: every worker's listen fails
  const taken = await startOrigin()
  t.teardown(() => taken.close())
  await t.rejects(startServerProcess({ ...env('workers'), WORKERS: '2', PORT: String(taken.port) }),
    { message: /exited \(1\) before listening:[\s\S]*EADDRINUSE[\s\S]*a worker exited before the service started: stopping/ })
})

t.test('--import-users migrates, upserts users.txt and stops without serving', async (t) => {
  const { DATABASE_URL } = env('import')
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'server.ts', '--import-users'], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    env: { ...process.env, DATABASE_URL, LOG_LEVEL: 'info' }
  })
  t.match(stdout, /"created":3,"updated":0,"disabled":0,"msg":"users imported"/)
  const { db } = connect(DATABASE_URL)
  t.teardown(() => db.destroy())
  t.same((await db.selectFrom('users').select('username').orderBy('username').execute()).map((u) => u.username), ['alice', 'bob', 'carol'])
})

/** A token of the gold sample user from a running server. */
async function goldToken (baseUrl: string): Promise<string> {
  const login = await request(`${baseUrl}/v1/auth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: sampleUsers.gold.username, passwordHash: sha256Hex(sampleUsers.gold.password) })
  })
  return (await login.body.json() as { access_token: string }).access_token
}

t.test('SIGTERM lets the dump in flight finish, then the process exits cleanly', async (t) => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const server = await startServerProcess(env('graceful'))
  t.teardown(() => server.stop('SIGKILL'))
  const token = await goldToken(server.baseUrl)
  const images = Array.from({ length: 4 }, (_, i) => origin.url(`/delay/300/png/${i}`))
  const dump = request(`${server.baseUrl}/v1/dumps`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ items: [{ name: 'in flight', images }] })
  })
  await origin.waitForRequests(4)
  server.child.kill('SIGTERM')
  const response = await dump
  t.equal(response.statusCode, 200, 'the dump in flight is answered')
  t.equal(response.headers.connection, 'close', 'on a connection that then closes, so the stop need not wait for it to idle out')
  const body = await response.body.json() as { status: string }
  t.equal(body.status, 'SUCCESS', 'with every image downloaded')
  t.equal(await server.exited, 0, 'then the process exits with 0')
  t.ok(server.logs.some((line) => line.includes('shutting down')), 'and says it is shutting down')
})

t.test('a stop that cannot finish within SHUTDOWN_GRACE_MS exits 1 anyway', async (t) => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const server = await startServerProcess({ ...env('grace'), SHUTDOWN_GRACE_MS: '500' })
  t.teardown(() => server.stop('SIGKILL'))
  const token = await goldToken(server.baseUrl)
  // an image the origin holds until told: the dump cannot finish before the grace runs out
  const dump = request(`${server.baseUrl}/v1/dumps`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ items: [{ name: 'held', images: [origin.url('/held/grace/png/1')] }] })
  }).catch((error: unknown) => error)
  await origin.waitForRequests(1)
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 1, 'the process exits by itself, with 1')
  t.ok(server.logs.some((line) => line.includes('killed by timeout (500ms)')), 'saying why')
  t.ok(await dump instanceof Error, 'the held dump lost its connection')
})
