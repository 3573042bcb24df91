/**
 * The `image-dump` command, run as a user runs it (a process, its real stdin, stdout and
 * stderr) against the service listening on 127.0.0.1 and a real origin: login and its
 * token file, push with its exit codes (0 all stored, 1 some failed, 2 refused, 3 cannot
 * reach), --async, status, pull, quota; its progress drawn in place in a terminal (tmux)
 * and written as plain lines, without control characters, to a pipe.
 *
 * SQLite only: the command sees the service through HTTP, the same on either engine.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { get, type ClientRequest, type IncomingMessage } from 'node:http'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp } from '../helpers/app.js'
import { buildDist, root } from '../helpers/build.js'
import { userEnv } from '../helpers/command.js'
import { jsonBatch, xmlBatch } from '../helpers/dumps.js'
import { makePng } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'

// some twenty processes are started, each a Node.js start: seconds apiece on a loaded machine
t.setTimeout(600_000)

const origin = await startOrigin()
t.teardown(() => origin.close())

// the command as the package ships it (the bin): built once, started without a TypeScript loader
await buildDist()
const CLI = join(root, 'dist', 'cli', 'image-dump.js')
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/ // eslint-disable-line no-control-regex -- what a pipe must not get: anything but \t and \n

interface Result { code: number | null, stdout: string, stderr: string }

/** Runs the command with `args`, `input` on its stdin, against `env`. */
async function imageDump (env: Record<string, string>, args: string[], input = ''): Promise<Result> {
  return await new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: root, env: { ...userEnv(), ...env }, stdio: ['pipe', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString() })
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
    child.once('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(input)
  })
}

/** The service on a port of its own; `onRequest` sees each request's method and URL as it arrives. */
async function service (t: Test, env: Record<string, string> = {}, onRequest?: (method: string, url: string) => void): Promise<{ env: Record<string, string>, dir: string }> {
  const { app } = await buildTestApp(t, 'sqlite', env)
  if (onRequest !== undefined) app.server.on('request', (request: IncomingMessage) => onRequest(request.method ?? '', request.url ?? ''))
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  const dir = await mkdtemp(join(tmpdir(), 'image-dump-cli-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return { env: { IMAGE_DUMP_URL: `http://127.0.0.1:${address.port}`, IMAGE_DUMP_TOKEN_FILE: join(dir, 'config', 'tokens.json') }, dir }
}

/** A port nothing listens on: taken, then given back. */
async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

t.test('login keeps the token in a file only its owner can read; a wrong password is refused', async (t) => {
  const { env } = await service(t)
  const wrong = await imageDump(env, ['login', 'bob'], 'not-his-password\n')
  t.equal(wrong.code, 2, 'refused: exit 2')
  t.match(wrong.stderr, /refused \(401\): invalid username or password/)

  const right = await imageDump(env, ['login', 'bob'], 'silver-password\n')
  t.equal(right.code, 0, right.stderr)
  t.match(right.stderr, /logged in to .* as bob/)
  t.equal((await stat(env['IMAGE_DUMP_TOKEN_FILE']!)).mode & 0o777, 0o600, 'the token file is 0600')
  t.equal((await stat(join(env['IMAGE_DUMP_TOKEN_FILE']!, '..'))).mode & 0o777, 0o700, 'in a 0700 folder')
  const quota = await imageDump(env, ['quota'])
  t.equal(quota.code, 0, quota.stderr)
  t.equal(quota.stdout, 'plan silver: 0 of 50 dumps used in the last 60 minutes, 50 left\n')
})

t.test('push: exit 0 when every image is stored, 1 when some failed; then status and pull', async (t) => {
  const { env, dir } = await service(t)
  t.equal((await imageDump(env, ['login', 'alice'], 'gold-password')).code, 0)

  const good = join(dir, 'feed.json')
  await writeFile(good, jsonBatch([{ name: 'Soup', images: [origin.url('/png/11'), origin.url('/png/12')] }, { name: 'Tea', images: [origin.url('/png/13')] }]))
  const stored = await imageDump(env, ['push', good])
  t.equal(stored.code, 0, `all stored: exit 0 (${stored.stderr})`)
  const id = /^dump (\d+): SUCCESS; 3 of 3 images stored, 0 failed$/m.exec(stored.stdout)?.[1]
  t.ok(id !== undefined, `the summary: ${stored.stdout}`)
  t.match(stored.stderr, new RegExp(`^dump ${id}: \\d/3 images`, 'm'), 'progress as plain lines')
  t.notOk(CONTROL.test(stored.stdout + stored.stderr), 'no control characters in a pipe')

  const pulled = join(dir, 'pulled')
  const pull = await imageDump(env, ['pull', id!, pulled])
  t.equal(pull.code, 0, pull.stderr)
  t.same((await readdir(pulled)).sort(), ['1.png', '2.png', '3.png'], 'named as the service names them')
  t.same(await readFile(join(pulled, '3.png')), makePng(13), 'the bytes the origin served')

  const mixed = join(dir, 'feed.xml')
  await writeFile(mixed, xmlBatch([{ name: 'Half', images: [origin.url('/png/14'), origin.url('/status/404')] }]))
  const partial = await imageDump(env, ['push', mixed])
  t.equal(partial.code, 1, 'some failed: exit 1')
  t.match(partial.stdout, /PARTIAL; 1 of 2 images stored, 1 failed\n {2}failed: image 2 .*\/status\/404: HTTP 404\n$/)
  const partialId = /^dump (\d+)/.exec(partial.stdout)![1]!
  const status = await imageDump(env, ['status', partialId, '--json'])
  t.equal(status.code, 1)
  t.match(JSON.parse(status.stdout), { requestId: Number(partialId), status: 'PARTIAL' })
  t.equal((await imageDump(env, ['pull', partialId, join(dir, 'half')])).code, 1, 'a pull of a dump with failures: exit 1')
})

t.test('push --async answers with the id at once; status follows the dump', async (t) => {
  const { env, dir } = await service(t)
  t.equal((await imageDump(env, ['login', 'alice'], 'gold-password')).code, 0)
  const feed = join(dir, 'feed.json')
  await writeFile(feed, jsonBatch([{ name: 'Held', images: [origin.url('/png/21'), origin.url('/held/cli-async/png/22')] }]))
  const pushed = await imageDump(env, ['push', '--async', feed])
  t.equal(pushed.code, 0, pushed.stderr)
  t.match(pushed.stdout, /^\d+\n$/, 'the id alone on stdout')
  const id = pushed.stdout.trim()
  const running = await imageDump(env, ['status', id])
  t.equal(running.code, 0, 'nothing failed so far')
  t.match(running.stdout, new RegExp(`^dump ${id}: running, [01] of 2 images done`))
  origin.release('cli-async')
  let done: Result | undefined
  // bounded: the held image is answered at once now
  for (let i = 0; i < 100 && !(done?.stdout.includes('SUCCESS') ?? false); i++) {
    if (done !== undefined) await sleep(100)
    done = await imageDump(env, ['status', id])
  }
  t.match(done?.stdout, /SUCCESS; 2 of 2 images stored/)
})

t.test('push follows a running dump through its events stream rather than asking for its record again and again', async (t) => {
  const asked: string[] = []
  let following: () => void = () => {}
  const followed = new Promise<void>((resolve) => { following = resolve })
  const { env, dir } = await service(t, {}, (method, url) => {
    const path = url.split('?')[0]!
    if (!/^\/v1\/dumps\/\d+/.test(path)) return
    asked.push(`${method} ${path}`)
    // the command is following the dump, one way or the other: time to let it finish
    if (method === 'GET') following()
  })
  t.equal((await imageDump(env, ['login', 'alice'], 'gold-password')).code, 0)
  const feed = join(dir, 'feed.json')
  await writeFile(feed, jsonBatch([{ name: 'Live', images: [origin.url('/png/51'), origin.url('/held/cli-events/png/52')] }]))

  const pushed = imageDump(env, ['push', feed])
  await followed
  origin.release('cli-events')
  const result = await pushed
  t.equal(result.code, 0, result.stderr)
  const id = /^dump (\d+): SUCCESS; 2 of 2 images stored/.exec(result.stdout)?.[1]
  t.ok(id !== undefined, result.stdout)
  t.match(result.stderr, new RegExp(`^dump ${id}: 2/2 images \\(2 stored, 0 failed\\)`, 'm'), 'the progress reached the end')
  t.ok(asked.filter((line) => line === `GET /v1/dumps/${id}/events`).length >= 1, 'the events stream was read')
  t.same(asked.filter((line) => line === `GET /v1/dumps/${id}`), [`GET /v1/dumps/${id}`], 'the record was asked for once, at the end')
})

t.test('where the events stream is refused (the user holds as many as allowed), push asks for the record instead', async (t) => {
  const asked: string[] = []
  let polling: () => void = () => {}
  const polled = new Promise<void>((resolve) => { polling = resolve })
  const { env, dir } = await service(t, { EVENTS_MAX_STREAMS_PER_USER: '1' }, (method, url) => {
    const line = `${method} ${url.split('?')[0]!}`
    asked.push(line)
    // the record of the pushed dump (the second) asked for twice while it runs: it is being polled
    if (asked.filter((seen) => seen === 'GET /v1/dumps/2').length === 2) polling()
  })
  t.equal((await imageDump(env, ['login', 'alice'], 'gold-password')).code, 0)
  const busy = join(dir, 'busy.json')
  await writeFile(busy, jsonBatch([{ name: 'Busy', images: [origin.url('/held/cli-busy/png/61')] }]))
  t.equal((await imageDump(env, ['push', '--async', busy])).stdout, '1\n')
  // the one stream alice may hold, on her first dump, open until the end of the test
  const { token } = Object.values(JSON.parse(await readFile(env['IMAGE_DUMP_TOKEN_FILE']!, 'utf8')) as Record<string, { token: string }>)[0]!
  const held = await new Promise<ClientRequest>((resolve, reject) => {
    const request = get(`${env['IMAGE_DUMP_URL']}/v1/dumps/1/events`, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' } }, (response) => {
      if (response.statusCode === 200) resolve(request)
      else reject(new Error(`the held stream was answered ${response.statusCode}`))
    })
    request.once('error', reject)
  })

  const feed = join(dir, 'feed.json')
  await writeFile(feed, jsonBatch([{ name: 'Polled', images: [origin.url('/held/cli-poll/png/62')] }]))
  const pushed = imageDump(env, ['push', feed])
  await polled
  origin.release('cli-poll')
  const result = await pushed
  held.destroy()
  origin.release('cli-busy')
  t.equal(result.code, 0, result.stderr)
  t.match(result.stdout, /^dump 2: SUCCESS; 1 of 1 images stored/)
  t.ok(asked.includes('GET /v1/dumps/2/events'), 'the events stream was asked for first')
  t.ok(asked.filter((line) => line === 'GET /v1/dumps/2').length >= 3, 'then the record, while it ran and at the end')
})

t.test('refused is exit 2, unreachable is exit 3', async (t) => {
  const { env, dir } = await service(t, { PLANS: 'gold=100,silver=50,bronze=1' })
  const feed = join(dir, 'feed.json')
  await writeFile(feed, jsonBatch([{ name: 'One', images: [origin.url('/png/31')] }]))

  const notLoggedIn = await imageDump(env, ['push', feed])
  t.equal(notLoggedIn.code, 2)
  t.match(notLoggedIn.stderr, /not logged in to .*: run `image-dump login <username>`/)

  t.equal((await imageDump(env, ['login', 'carol'], 'bronze-password')).code, 0)
  t.equal((await imageDump(env, ['push', feed])).code, 0, 'the one dump of the hour')
  const overQuota = await imageDump(env, ['push', feed])
  t.equal(overQuota.code, 2, 'past the quota')
  t.match(overQuota.stderr, /refused \(429\): quota exceeded.*\[retry after \d+ s\]/)

  const invalid = join(dir, 'invalid.json')
  await writeFile(invalid, '{"items":[{"images":["x"]}]}')
  const bad = await imageDump(env, ['push', invalid])
  t.equal(bad.code, 2, 'an invalid feed')
  t.match(bad.stderr, /refused \(400\): items\[0\]\.name: is required/)
  t.equal((await imageDump(env, ['push', join(dir, 'missing.json')])).code, 2, 'a file that is not there')
  t.equal((await imageDump(env, ['status', 'seven'])).code, 2, 'a usage error')

  const unreachable = await imageDump({ ...env, IMAGE_DUMP_URL: `http://127.0.0.1:${await closedPort()}` }, ['login', 'carol'], 'bronze-password')
  t.equal(unreachable.code, 3)
  t.match(unreachable.stderr, /cannot reach http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/)
})

const tmux = spawnSync('tmux', ['-V']).status === 0
t.test('in a terminal, the progress is one line drawn in place', { skip: tmux ? false : 'tmux is not installed (apt-get install tmux)' }, async (t) => {
  const { env, dir } = await service(t)
  t.equal((await imageDump(env, ['login', 'alice'], 'gold-password')).code, 0)
  const feed = join(dir, 'feed.json')
  await writeFile(feed, jsonBatch([{ name: 'Shown', images: [origin.url('/png/41'), origin.url('/png/42'), origin.url('/held/cli-tty/png/43')] }]))

  const socket = `image-dump-cli-${process.pid}`
  const tmuxRun = (...args: string[]): string => {
    const result = spawnSync('tmux', ['-L', socket, ...args], { encoding: 'utf8' })
    if (result.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${result.stderr}`)
    return result.stdout
  }
  t.teardown(() => { spawnSync('tmux', ['-L', socket, 'kill-server']) })
  const environment = Object.entries({ ...env, PATH: process.env['PATH'] ?? '' }).map(([key, value]) => `${key}='${value}'`).join(' ')
  tmuxRun('new-session', '-d', '-s', 'cli', '-x', '150', '-y', '12', `env -i HOME='${dir}' TERM=xterm-256color ${environment} '${process.execPath}' '${CLI}' push '${feed}'; echo "EXIT=$?"; sleep 600`)
  const screen = (): string => tmuxRun('capture-pane', '-p', '-t', 'cli')
  async function until (what: RegExp): Promise<string> {
    for (let i = 0; i < 300; i++) {
      const shown = screen()
      if (what.test(shown)) return shown
      await sleep(50)
    }
    throw new Error(`the terminal never showed ${what}:\n${screen()}`)
  }

  const midway = await until(/2\/3 images \| 2 stored, 0 failed/)
  t.match(midway, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] dump \d+ \[█+░+\] 2\/3 images \| 2 stored, 0 failed \| \d+s/, 'a spinner, a bar, the counts and the time')
  origin.release('cli-tty')
  const end = await until(/EXIT=\d/)
  t.match(end, /EXIT=0/)
  t.match(end, /✔ dump \d+ \[█+\] 3\/3 images \| 3 stored, 0 failed/)
  t.equal(end.split('\n').filter((line) => line.includes(' images | ')).length, 1, 'redrawn in place: one progress line')
  t.match(end, /SUCCESS; 3 of 3 images stored, 0 failed/)
})
