/**
 * examples/embed, run as its README says: the package built, the host app in a process of
 * its own, importing the package by name. The host's routes keep the host's credentials and
 * answer format; image-dump works under /images with its own.
 */
import t from 'tap'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sha256Hex } from '../../lib/password.js'
import { buildDist, root } from '../helpers/build.js'
import { run, userEnv } from '../helpers/command.js'
import { makePng } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'
import { startNodeProcess } from '../helpers/server-process.js'
import { sampleUsers } from '../helpers/users.js'

const API_KEY = 'the-shop-api-key-used-in-this-test'
const HOST_404 = { error: { status: 404, message: 'no such page' } }

const started = performance.now()
await buildDist()
t.comment(`build ${((performance.now() - started) / 1000).toFixed(1)} s`)

t.test('the example typechecks against the declarations the build ships', async (t) => {
  const tsc = await run(process.execPath, [createRequire(import.meta.url).resolve('typescript/bin/tsc'), '-p', 'examples/embed/tsconfig.json'],
    { cwd: root, env: userEnv() })
  t.equal(tsc.code, 0, 'tsc -p examples/embed/tsconfig.json', { output: tsc.output })
})

t.test('the host app, with image-dump under /images, as a process', async (t) => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const data = await mkdtemp(join(tmpdir(), 'image-dump-example-'))
  t.teardown(() => rm(data, { recursive: true, force: true }))
  await mkdir(join(data, 'images'))
  const server = await startNodeProcess(['--import', 'tsx', 'examples/embed/server.ts'], {
    baseEnv: userEnv(),
    env: {
      SHOP_API_KEY: API_KEY,
      DATABASE_URL: `sqlite:${join(data, 'image-dump.db')}`,
      STORAGE_DIR: join(data, 'images'),
      USERS_FILE: join(root, 'users.txt'),
      ALLOW_PRIVATE_NETWORKS: 'true'
    }
  })
  t.teardown(() => server.stop())
  const url = (path: string): string => `${server.baseUrl}${path}`
  const json = async (response: Response): Promise<{ status: number, body: unknown }> => ({ status: response.status, body: await response.json() })

  t.test("the host's own routes, behind the host's own API key", async (t) => {
    const refused = { status: 401, body: { error: { status: 401, message: 'send the shop API key in the X-Api-Key header' } } }
    t.same(await json(await fetch(url('/api/products'))), refused, 'no key: 401 in the host format')
    t.same(await json(await fetch(url('/api/products'), { headers: { 'x-api-key': 'not-the-key' } })), refused, 'a wrong key')
    const products = await json(await fetch(url('/api/products'), { headers: { 'x-api-key': API_KEY } }))
    t.match(products, { status: 200, body: { products: [{ sku: 'TEA-001' }, { sku: 'TEA-002' }] } }, 'the key opens them')
    t.same(await json(await fetch(url('/'))), { status: 200, body: { shop: 'open', images: '/images' } }, 'a public route')
  })

  t.test('a login and a dump through /images, against a loopback origin', async (t) => {
    const login = await fetch(url('/images/v1/auth/token'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ username: sampleUsers.gold.username, passwordHash: sha256Hex(sampleUsers.gold.password) })
    })
    t.equal(login.status, 200, 'logged in')
    const { access_token: token } = await login.json() as { access_token: string }

    const imageUrl = origin.url('/png/7')
    const dump = await fetch(url('/images/v1/dumps'), {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/xml', accept: 'application/json' },
      body: `<items><item><name>Green tea, 100 g</name><images><url>${imageUrl}</url></images></item></items>`
    })
    const result = await dump.json() as { requestId: number, status: string, items: Array<{ images: Array<{ imageId: number, url: string, status: string }> }> }
    t.equal(dump.status, 200, 'an XML dump answered in JSON')
    t.match(result, { status: 'SUCCESS', items: [{ images: [{ url: imageUrl, status: 'SUCCESS' }] }] }, 'the image was downloaded')
    t.equal(dump.headers.get('ratelimit-limit'), '100', "the gold plan's quota counted it")

    const image = await fetch(url(`/images/v1/dumps/${result.requestId}/images/${result.items[0]!.images[0]!.imageId}`), { headers: { authorization: `Bearer ${token}` } })
    t.equal(image.status, 200, 'its image, through the prefix')
    t.same(Buffer.from(await image.arrayBuffer()), makePng(7), 'the stored image is served back, byte for byte')

    const withToken = await fetch(url('/api/products'), { headers: { authorization: `Bearer ${token}` } })
    t.equal(withToken.status, 401, "an image-dump token is no key to the host's routes")
    const noToken = await json(await fetch(url('/images/v1/quota')))
    t.match(noToken, { status: 401, body: { statusCode: 401, error: 'Unauthorized' } }, "and image-dump answers in its own format, not the host's")
  })

  t.test('an unknown path is a 404 of the host, in its format', async (t) => {
    t.same(await json(await fetch(url('/no/such/page'))), { status: 404, body: HOST_404 }, 'a path of the host')
    t.same(await json(await fetch(url('/images/no/such/page'))), { status: 404, body: HOST_404 },
      'under /images too: image-dump sets no not-found handler')
  })

  t.test('SIGTERM: the host closes, image-dump with it, and the process ends by itself', async (t) => {
    t.equal(await server.stop('SIGTERM'), 0, 'exit code 0, nothing left holding it open')
  })
})
