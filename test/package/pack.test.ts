/**
 * The package as another project gets it. dist is built and packed with npm; a new project
 * outside the repository installs the tarball with npm, compiles a host app
 * (test/package/host/host.ts) against the declarations the tarball ships, and runs it: the
 * whole application under /images, and the persistence, users and auth plugins alone,
 * guarding routes of the host's own.
 *
 * Needs the npm registry (the package's dependencies come from there, or from npm's cache).
 * When it cannot be reached the test is skipped and says why; in CI (CI=true, or .ci/run,
 * which sets FAULTS_REQUIRED=true) that is a failure instead.
 */
import t from 'tap'
import { existsSync } from 'node:fs'
import { access, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { builtinModules, createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { sha256Hex } from '../../lib/password.js'
import { buildDist, root } from '../helpers/build.js'
import { run, userEnv, type RunResult } from '../helpers/command.js'
import { startNodeProcess } from '../helpers/server-process.js'

const required = process.env.CI === 'true' || process.env.FAULTS_REQUIRED === 'true'

const phases: string[] = []
async function timed<T> (name: string, step: () => Promise<T>): Promise<T> {
  const start = performance.now()
  try {
    return await step()
  } finally {
    phases.push(`${name} ${((performance.now() - start) / 1000).toFixed(1)} s`)
  }
}
t.teardown(() => { t.comment(`timings: ${phases.join(', ')}`) })

async function npm (args: string[], cwd: string): Promise<RunResult> {
  return await run('npm', args, { cwd, env: userEnv() })
}

const pkg = JSON.parse(await readFile(join(root, 'package.json'), 'utf8')) as {
  exports: Record<string, { types: string, default: string }>
  dependencies: Record<string, string>
}
const fromRepo = createRequire(join(root, 'package.json'))
const versionIn = async (packageJson: string): Promise<string> => (JSON.parse(await readFile(packageJson, 'utf8')) as { version: string }).version

await timed('build', buildDist)

t.test('the tarball holds the built code, its declarations, the README, the license and users.txt, and nothing else', async (t) => {
  const dry = await timed('pack --dry-run', () => npm(['pack', '--dry-run', '--json'], root))
  t.equal(dry.code, 0, 'npm pack --dry-run', { output: dry.output })
  const files = (JSON.parse(dry.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path).sort()

  t.same(files.filter((path) => !/^dist\/.+\.(js|d\.ts)$/.test(path)), ['LICENSE', 'README.md', 'package.json', 'users.txt', 'web/icon.svg', 'web/index.html', 'web/style.css'],
    'besides dist/**/*.js and *.d.ts: the license, the README, the package file, the sample users and the web page\'s HTML, CSS and icon; no sources, tests, bench, maps or .tsbuildinfo')
  t.same(files.filter((path) => path.startsWith('dist/web/')), ['dist/web/api.js', 'dist/web/app.js'], "the web page's scripts, compiled for the browser")
  const targets = Object.values(pkg.exports).flatMap((target) => [target.types, target.default].map((path) => path.replace(/^\.\//, '')))
  t.same(targets.filter((path) => !files.includes(path)), [], 'every file package.json exports is in it')
  const js = files.filter((path) => path.endsWith('.js'))
  t.same(js.filter((path) => !path.startsWith('dist/web/') && !files.includes(path.replace(/\.js$/, '.d.ts'))), [],
    'every module comes with its declarations (but the page\'s scripts, which only the browser loads)')
  const stale: string[] = []
  for (const path of js) {
    try {
      await access(join(root, path.replace(/^dist\//, '').replace(/\.js$/, '.ts')))
    } catch {
      stale.push(path)
    }
  }
  t.same(stale, [], 'every module is built from a source that still exists (no leftovers in dist)')

  // A host compiles with skipLibCheck (see host/tsconfig.json), which would turn a type
  // imported from a package the host does not get into a silent `any`.
  const imported = new Set<string>()
  for (const path of files.filter((file) => file.endsWith('.d.ts'))) {
    const text = (await readFile(join(root, path), 'utf8')).replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '')
    for (const [, specifier] of text.matchAll(/(?:from\s+|import\()["']([^"'.][^"']*)["']/g)) {
      imported.add(specifier!.startsWith('@') ? specifier!.split('/').slice(0, 2).join('/') : specifier!.split('/')[0]!)
    }
  }
  t.same([...imported].filter((name) => !name.startsWith('node:') && !builtinModules.includes(name) && pkg.dependencies[name] === undefined), [],
    'the declarations import only Node.js and the dependencies a host installs')
})

t.test('installed in a new project, a host compiles against its types and runs it', async (t) => {
  const scratch = await mkdtemp(join(tmpdir(), 'image-dump-pack-'))
  t.teardown(() => rm(scratch, { recursive: true, force: true }))
  const host = join(scratch, 'host')
  const data = join(scratch, 'data')
  await mkdir(host)
  await mkdir(join(data, 'images'), { recursive: true })

  const packed = await timed('pack', () => npm(['pack', '--json', '--pack-destination', scratch], root))
  t.equal(packed.code, 0, 'npm pack', { output: packed.output })
  const tarball = join(scratch, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]!.filename)

  await writeFile(join(host, 'package.json'), JSON.stringify({ name: 'image-dump-host', version: '1.0.0', private: true, type: 'module' }, null, 2))
  // The native addons are not built here. better-sqlite3 compiles SQLite from source in its
  // install script (about two minutes on this machine); argon2's prebuilt binaries declare
  // Node-API 10, which Node 20 lacks (loading one there kills the process with SIGSEGV), so
  // its install script falls back to compiling it too. The install runs no scripts, and the
  // addons this repository's own install built are copied in below. That is sound only for
  // the same versions, so the host asks for exactly those (the lockfile's), which satisfy
  // the package's own ranges. Where the repository has no built argon2 (its prebuilt binary
  // loaded), the host uses the prebuilt one too.
  const native = [
    { name: 'better-sqlite3', addon: join('build', 'Release', 'better_sqlite3.node') },
    { name: 'argon2', addon: join('build', 'Release', 'argon2.node') }
  ]
  const repoDir = (name: string): string => dirname(fromRepo.resolve(`${name}/package.json`))
  const pins = await Promise.all(native.map(async ({ name }) => `${name}@${await versionIn(join(repoDir(name), 'package.json'))}`))
  const typesNode = `@types/node@${await versionIn(fromRepo.resolve('@types/node/package.json'))}`
  // Asked once, without retries: an install against a registry it cannot reach would retry for minutes.
  const ping = await npm(['ping', '--fetch-retries=0', '--fetch-timeout=10000'], host)
  if (ping.code !== 0) {
    if (required) t.fail('the npm registry cannot be reached', { output: ping.output })
    else t.comment(`package install test skipped: the npm registry cannot be reached\n${ping.output}`)
    return
  }
  const install = await timed('npm install', () => npm([
    'install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', tarball, 'fastify@5', ...pins, typesNode
  ], host))
  t.equal(install.code, 0, 'npm install of the tarball', { output: install.output })

  const installed = join(host, 'node_modules', 'image-dump')
  const fromInstalled = createRequire(join(installed, 'package.json'))
  for (const { name, addon } of native) {
    const hostDir = dirname(fromInstalled.resolve(`${name}/package.json`))
    t.equal(await versionIn(join(hostDir, 'package.json')), await versionIn(join(repoDir(name), 'package.json')), `the package gets the ${name} installed here`)
    if (!existsSync(join(repoDir(name), addon))) continue
    await mkdir(dirname(join(hostDir, addon)), { recursive: true })
    await copyFile(join(repoDir(name), addon), join(hostDir, addon))
  }
  const loads = await run(process.execPath, ['--input-type=module', '-e', `
    import argon2 from 'argon2'
    import Database from 'better-sqlite3'
    console.log(await argon2.verify(await argon2.hash('x'), 'x'), new Database(':memory:').prepare('SELECT 1 AS one').get().one)`
  ], { cwd: installed, env: userEnv() })
  t.same([loads.code, loads.output], [0, 'true 1'], 'argon2 and better-sqlite3 load where the package finds them')

  await copyFile(join(root, 'test/package/host/host.ts'), join(host, 'host.ts'))
  await copyFile(join(root, 'test/package/host/tsconfig.json'), join(host, 'tsconfig.json'))
  const tsc = await timed('tsc', () => run(process.execPath, [fromRepo.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: host, env: userEnv() }))
  t.equal(tsc.code, 0, 'the host compiles (strict, NodeNext) against the shipped declarations, its misuses refused', { output: tsc.output })

  const usersFile = join(data, 'users.txt')
  await writeFile(usersFile, 'username,password,plan\ndana,dana-password,silver\n')
  const server = await timed('start', () => startNodeProcess([join(host, 'dist', 'host.js')], {
    cwd: host,
    baseEnv: userEnv(),
    env: {
      DATABASE_URL: `sqlite:${join(data, 'images.db')}`,
      STAFF_DATABASE_URL: `sqlite:${join(data, 'staff.db')}`,
      STORAGE_DIR: join(data, 'images'),
      USERS_FILE: usersFile
    }
  }))
  t.teardown(() => server.stop())
  const call = async (path: string, init: RequestInit = {}): Promise<{ status: number, body: Record<string, unknown> }> => {
    const response = await fetch(`${server.baseUrl}${path}`, init)
    return { status: response.status, body: await response.json() as Record<string, unknown> }
  }
  const bearer = (token: unknown): RequestInit => ({ headers: { authorization: `Bearer ${String(token)}` } })
  const credentials = { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'dana', passwordHash: sha256Hex('dana-password') }) }

  t.same(await call('/hello'), { status: 200, body: { hello: 'from the host' } }, "the host's own route")

  const login = await call('/images/v1/auth/token', credentials)
  t.match(login, { status: 200, body: { token_type: 'Bearer', access_token: String } }, 'a login through the prefix, as a user of the temporary users.txt')
  const serviceToken = login.body.access_token
  t.match(await call('/images/v1/quota', bearer(serviceToken)), { status: 200, body: { plan: 'silver', limit: 50, used: 0, remaining: 50 } },
    'the quota through the prefix')
  t.match(await call('/images/v1/quota'), { status: 401, body: { statusCode: 401, error: 'Unauthorized' } }, "without a token, the service's 401")

  // the web page, found by the built server where the package is installed
  const page = await fetch(`${server.baseUrl}/images/`)
  t.equal(page.status, 200, 'the web page under the prefix')
  t.match(await page.text(), /<script type="module" src="web\/app\.js"><\/script>/, 'is the page')
  t.match(page.headers.get('content-security-policy'), /default-src 'none'/, 'with its Content-Security-Policy')
  for (const asset of ['web/app.js', 'web/api.js', 'web/style.css', 'web/icon.svg']) {
    const response = await fetch(`${server.baseUrl}/images/${asset}`)
    t.equal(response.status, 200, `and its ${asset}`)
    await response.arrayBuffer()
  }
  const bare = await fetch(`${server.baseUrl}/images`, { redirect: 'manual' })
  t.same([bare.status, bare.headers.get('location')], [301, '/images/'], 'the prefix without its slash is sent to the page, whose links are relative')

  const staffLogin = await call('/staff/login', credentials)
  t.match(staffLogin, { status: 200, body: { token: String, expiresIn: 600 } }, 'a login through the auth plugin alone, on a host route')
  t.match(await call('/staff/me', bearer(staffLogin.body.token)), { status: 200, body: { username: 'dana', plan: 'silver', userid: Number, databaseOk: true } },
    "the host's route guarded by imageDumpAuth.authenticate reads request.principal")
  t.equal((await call('/staff/me')).status, 401, 'refused without a token')
  t.equal((await call('/staff/me', bearer(serviceToken))).status, 401, 'and with a token of the /images copy: its own database, its own secrets')

  t.equal(await server.stop(), 0, 'the host stops cleanly')

  // the package's bin, as npm linked it, talking to the host's copy of the service
  const bin = join(host, 'node_modules', '.bin', 'image-dump')
  const help = await run(bin, ['--help'], { cwd: host, env: userEnv() })
  t.equal(help.code, 0, 'the installed bin runs', { output: help.output })
  t.match(help.output, /Usage: image-dump \[options\] \[command\]/)
})
