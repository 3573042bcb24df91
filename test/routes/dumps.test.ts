import t from 'tap'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { tmpdir } from 'node:os'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makeJpeg, makePng } from '../helpers/images.js'
import { countRows, filesUnder, postDump, type TestItem } from '../helpers/dumps.js'
import { createDumpImages } from '../../db/dump-images.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')
const env = { DOWNLOAD_TIMEOUT_MS: '1500', MAX_IMAGE_BYTES: '100000', DOWNLOAD_CONCURRENCY: '8' }

/** 60 items of 1-3 images each, a few of them failing, so statuses vary. */
function sixtyItems (): TestItem[] {
  return Array.from({ length: 60 }, (_, i) => ({
    name: `Item ${i}`,
    brand: i % 2 === 0 ? 'Cafe' : undefined,
    images: Array.from({ length: (i % 3) + 1 }, (_, j) =>
      (i + j) % 7 === 0 ? origin.url(`/status/404?i=${i}-${j}`) : origin.url(`/png/${i * 10 + j}`))
  }))
}

type Image = { imageId: number, url: string, status: string, location?: string, contentType?: string, bytes?: number, sha256?: string, error?: Record<string, unknown> }
type Item = { itemId: number, name: string, processStatus: string, images: Image[] }
const statuses = (body: { status: string, items: Item[] }) =>
  [body.status, ...body.items.map((item) => [item.itemId, item.processStatus, item.images.map((i) => [i.imageId, i.status, i.error?.type, i.error?.code ?? i.error?.httpStatus])])]

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: dumps`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine, env)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }

    t.test('a 60-item batch gives the same statuses as XML, canonical JSON and the literal mapping', async (t) => {
      const items = sixtyItems()
      const answers = []
      for (const format of ['xml', 'json', 'literal'] as const) {
        const response = await postDump(app, token, format, items, { accept: 'application/json' })
        t.equal(response.statusCode, 200, format)
        answers.push(response.json())
      }
      const [xml, json, literal] = answers
      t.equal(xml.items.length, 60)
      t.equal(xml.status, 'PARTIAL')
      t.same(statuses(json), statuses(xml), 'canonical JSON = XML')
      t.same(statuses(literal), statuses(xml), 'literal mapping = XML')
      const ids = xml.items.flatMap((item: Item) => item.images.map((image) => image.imageId))
      t.same(ids, Array.from({ length: ids.length }, (_, i) => i + 1), 'image ids run 1..m over the whole request')
      t.same(xml.items.map((item: Item) => item.itemId), Array.from({ length: 60 }, (_, i) => i + 1), 'item ids run 1..n')
      const first = xml.items[0] as Item
      t.same(first.images[0], { imageId: 1, url: items[0]!.images[0], status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } })
      const second = xml.items[1] as Item
      t.equal(second.processStatus, 'SUCCESS')
      const png = makePng(10)
      t.same(second.images[0], {
        imageId: 2,
        url: items[1]!.images[0],
        status: 'SUCCESS',
        location: `/v1/dumps/${xml.requestId}/images/2`,
        contentType: 'image/png',
        bytes: png.length,
        sha256: sha256(png),
        width: 8,
        height: 8
      })
    })

    t.test('a batch of one item with one URL', async (t) => {
      const response = await postDump(app, token, 'xml', [{ name: 'Solo', images: [origin.url('/jpeg/5')] }])
      t.equal(response.statusCode, 200)
      t.match(response.headers['content-type'], /^application\/xml/, 'an XML request is answered in XML')
      t.match(response.body, /<result><requestId>\d+<\/requestId><status>SUCCESS<\/status><items><item><itemId>1<\/itemId><name>Solo<\/name><processStatus>SUCCESS<\/processStatus><images><image><imageId>1<\/imageId>/)
      t.match(response.body, /<contentType>image\/jpeg<\/contentType>/)
    })

    t.test('entities, CDATA and UTF-8 names round-trip', async (t) => {
      const url = origin.url('/png/3?a=1&b=2')
      const xml = `<items><item><name><![CDATA[Crème <brûlée> & 東京]]></name><brand>Tom &amp; Jerry</brand><images><url>${url.replace('&', '&amp;')}</url></images></item></items>`
      const response = await app.inject({ method: 'POST', url: '/v1/dumps', payload: xml, headers: { ...auth, 'content-type': 'application/xml; charset=utf-8', accept: 'application/json' } })
      t.equal(response.statusCode, 200)
      const item = response.json().items[0]
      t.equal(item.name, 'Crème <brûlée> & 東京')
      t.equal(item.brand, 'Tom & Jerry')
      t.equal(item.images[0].url, url, '&amp; in a URL is the URL with &')
      t.equal(item.images[0].status, 'SUCCESS')
      t.ok(origin.paths.includes('/png/3?a=1&b=2'), 'the origin was asked for the decoded URL')

      const asXml = await app.inject({ method: 'POST', url: '/v1/dumps', payload: xml, headers: { ...auth, 'content-type': 'application/xml' } })
      t.match(asXml.body, /<name>Crème &lt;brûlée&gt; &amp; 東京<\/name>/, 'and is escaped again in XML answers')
    })

    t.test('content negotiation: the answer follows Accept, else the request format', async (t) => {
      const items = [{ name: 'N', images: [origin.url('/png/1')] }]
      const cases: Array<[ 'xml' | 'json', string | undefined, RegExp]> = [
        ['json', undefined, /^application\/json/],
        ['json', 'application/xml', /^application\/xml/],
        ['xml', undefined, /^application\/xml/],
        ['xml', 'application/json', /^application\/json/],
        ['json', 'application/xml;q=0.5, application/json', /^application\/json/]
      ]
      for (const [format, accept, type] of cases) {
        const response = await postDump(app, token, format, items, accept === undefined ? {} : { accept })
        t.equal(response.statusCode, 200)
        t.match(response.headers['content-type'], type, `${format} with Accept ${accept ?? '(none)'}`)
      }
    })

    t.test('every image failure is reported with its code, and nothing partial is left', async (t) => {
      const before = await filesUnder(storageDir)
      const cases: Array<[string, Record<string, unknown>]> = [
        [origin.url('/status/404'), { type: 'HTTP_ERROR', httpStatus: 404 }],
        [origin.url('/status/500'), { type: 'HTTP_ERROR', httpStatus: 500 }],
        [origin.url('/html'), { type: 'INTERNAL_ERROR', code: 'NOT_AN_IMAGE' }],
        [origin.url('/lying-png'), { type: 'INTERNAL_ERROR', code: 'NOT_AN_IMAGE' }],
        [origin.url('/svg'), { type: 'INTERNAL_ERROR', code: 'NOT_AN_IMAGE' }],
        [origin.url('/slow?ms=6000'), { type: 'INTERNAL_ERROR', code: 'TIMEOUT' }],
        [origin.url('/no-headers'), { type: 'INTERNAL_ERROR', code: 'TIMEOUT' }],
        [origin.url('/endless'), { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' }],
        [origin.url('/big?bytes=200000'), { type: 'INTERNAL_ERROR', code: 'TOO_LARGE' }],
        [origin.url('/loop'), { type: 'INTERNAL_ERROR', code: 'TOO_MANY_REDIRECTS' }],
        [origin.url('/redirect/6'), { type: 'INTERNAL_ERROR', code: 'TOO_MANY_REDIRECTS' }],
        [origin.url('/reset'), { type: 'INTERNAL_ERROR', code: 'CONNECTION' }],
        [origin.url('/truncated'), { type: 'INTERNAL_ERROR', code: 'CONNECTION' }],
        [`https://127.0.0.1:${origin.port}/png/1`, { type: 'INTERNAL_ERROR', code: 'TLS' }],
        ['http://no-such-host.invalid/a.png', { type: 'INTERNAL_ERROR', code: 'DNS' }],
        ['ftp://example.com/a.png', { type: 'INTERNAL_ERROR', code: 'INVALID_URL' }],
        ['not a url', { type: 'INTERNAL_ERROR', code: 'INVALID_URL' }],
        [`http://user:secret@127.0.0.1:${origin.port}/png/1`, { type: 'INTERNAL_ERROR', code: 'INVALID_URL' }],
        // bytes this user has not stored before: bytes stored before are not stored again
        [origin.url('/redirect/3?n=4321'), { status: 'SUCCESS' }]
      ]
      const response = await postDump(app, token, 'json', [{ name: 'Failures', images: cases.map(([url]) => url) }])
      t.equal(response.statusCode, 200)
      const body = response.json()
      t.equal(body.status, 'PARTIAL')
      t.equal(body.items[0].processStatus, 'PARTIAL')
      body.items[0].images.forEach((image: Image, i: number) => {
        const [url, expected] = cases[i]!
        if (expected.status === 'SUCCESS') t.equal(image.status, 'SUCCESS', url)
        else {
          t.equal(image.status, 'FAILURE', url)
          t.match(image.error, expected, url)
          if (image.error?.type === 'INTERNAL_ERROR') t.type(image.error.message, 'string', `${url}: says why`)
        }
      })
      const added = (await filesUnder(storageDir)).filter((f) => !before.includes(f))
      t.same(added, [`${dirname(added[0]!)}/${cases.length}.png`], 'only the one success is on disk: no partial or temporary file')
    })

    t.test('a dump whose images all fail is a FAILURE', async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'A', images: [origin.url('/status/410')] }, { name: 'B', images: [origin.url('/html')] }])
      t.equal(response.json().status, 'FAILURE')
      t.same(response.json().items.map((i: Item) => i.processStatus), ['FAILURE', 'FAILURE'])
    })

    t.test('the request log row matches the response', async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'Logged', manufacturer: 'M', images: [origin.url('/png/77'), origin.url('/status/404')] }])
      const body = response.json()
      const row = await app.persistence.db.selectFrom('requests').selectAll().where('id', '=', body.requestId).executeTakeFirstOrThrow()
      t.equal(row.dataformat, 'json')
      t.equal(Number(row.status), 1, 'complete')
      t.same(JSON.parse(Buffer.from(row.data!).toString('utf8')), body, 'the data blob is the answer')

      const logged = await app.inject({ method: 'GET', url: `/v1/dumps/${body.requestId}`, headers: auth })
      t.equal(logged.statusCode, 200)
      t.same(logged.json(), body)
      t.equal(logged.headers['x-dump-complete'], 'true')

      const xml = await postDump(app, token, 'xml', [{ name: 'Logged', images: [origin.url('/png/78')] }])
      const xmlId = Number(/<requestId>(\d+)<\/requestId>/.exec(xml.body)![1])
      const xmlRow = await app.persistence.db.selectFrom('requests').selectAll().where('id', '=', xmlId).executeTakeFirstOrThrow()
      t.equal(xmlRow.dataformat, 'xml')
      t.equal(Buffer.from(xmlRow.data!).toString('utf8'), xml.body, 'an XML dump is logged in XML')
    })

    t.test('GET an image answers the stored bytes with their type', async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'Pic', images: [origin.url('/jpeg/9'), origin.url('/png/9')] }])
      const [jpeg, png] = response.json().items[0].images as Image[]
      const first = await app.inject({ method: 'GET', url: jpeg!.location!, headers: auth })
      t.equal(first.statusCode, 200)
      t.equal(first.headers['content-type'], 'image/jpeg')
      t.same(first.rawPayload, makeJpeg(9))
      const second = await app.inject({ method: 'GET', url: png!.location!, headers: auth })
      t.equal(second.headers['content-type'], 'image/png')
      t.equal(sha256(second.rawPayload), png!.sha256)
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${response.json().requestId}/images/99`, headers: auth })).statusCode, 404)
    })

    t.test('GET an image: an ETag, and 304 when the client has it already', async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'Cached', images: [origin.url('/png/31')] }])
      const location = response.json().items[0].images[0].location as string
      const first = await app.inject({ method: 'GET', url: location, headers: auth })
      t.equal(first.statusCode, 200)
      const etag = first.headers.etag
      t.type(etag, 'string', 'the image has an ETag')
      t.equal(first.headers['x-content-type-options'], 'nosniff')
      t.equal(first.headers['cache-control'], 'private, no-cache', 'no shared cache keeps it; a private one revalidates')

      const again = await app.inject({ method: 'GET', url: location, headers: { ...auth, 'if-none-match': String(etag) } })
      t.equal(again.statusCode, 304, 'the same ETag is Not Modified')
      t.equal(again.rawPayload.length, 0, 'and has no body')
      const other = await app.inject({ method: 'GET', url: location, headers: { ...auth, 'if-none-match': '"something-else"' } })
      t.equal(other.statusCode, 200, 'another ETag gets the image')
      t.same(other.rawPayload, makePng(31))
      const stranger = await app.inject({ method: 'GET', url: location, headers: { 'if-none-match': String(etag) } })
      t.equal(stranger.statusCode, 401, 'a conditional request still needs a token')
    })

    t.test('GET an image: a Range request answers 206 with those bytes', async (t) => {
      const png = makePng(32, { bytes: 5000 })
      const response = await postDump(app, token, 'json', [{ name: 'Ranged', images: [origin.url('/png/32?bytes=5000')] }])
      const location = response.json().items[0].images[0].location as string
      const full = await app.inject({ method: 'GET', url: location, headers: auth })
      t.equal(full.headers['accept-ranges'], 'bytes', 'ranges are announced')

      const part = await app.inject({ method: 'GET', url: location, headers: { ...auth, range: 'bytes=100-1099' } })
      t.equal(part.statusCode, 206)
      t.equal(part.headers['content-range'], 'bytes 100-1099/5000')
      t.equal(part.headers['content-type'], 'image/png', 'the stored type, not a guess')
      t.equal(part.headers['x-content-type-options'], 'nosniff')
      t.same(part.rawPayload, png.subarray(100, 1100), 'exactly the bytes asked for')
      const tail = await app.inject({ method: 'GET', url: location, headers: { ...auth, range: 'bytes=-10' } })
      t.same(tail.rawPayload, png.subarray(4990), 'a suffix range')
      const beyond = await app.inject({ method: 'GET', url: location, headers: { ...auth, range: 'bytes=6000-' } })
      t.equal(beyond.statusCode, 416, 'a range past the end is Range Not Satisfiable')
    })

    t.test('the storage folder is not served: no route maps a URL onto it', async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'Hidden', images: [origin.url('/png/33')] }])
      const { requestId } = response.json()
      const stored = (await filesUnder(storageDir)).find((f) => f.endsWith(`/${requestId}/1.png`))!
      t.ok(stored, 'the image is on disk')
      for (const url of [`/${stored}`, `/v1/${stored}`, `/v1/dumps/${stored}`]) {
        t.equal((await app.inject({ method: 'GET', url, headers: auth })).statusCode, 404, url)
      }
      t.notOk(app.hasReplyDecorator('sendFile'), 'sending files is a decorator of the dump routes alone')
    })

    t.test("another user's dumps and images are 404", async (t) => {
      const response = await postDump(app, token, 'json', [{ name: 'Mine', images: [origin.url('/png/5')] }])
      const { requestId } = response.json()
      const other = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
      const headers = { authorization: `Bearer ${other}` }
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}`, headers })).statusCode, 404)
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}/images/1`, headers })).statusCode, 404)
      t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}` })).statusCode, 401, 'and nobody without a token')
    })

    t.test('refused requests change nothing: no row, no file', async (t) => {
      const rows = await countRows(app)
      const files = await filesUnder(storageDir)
      const good = JSON.stringify({ items: [{ name: 'x', images: [origin.url('/png/1')] }] })
      const attempts = [
        { name: 'no token', headers: { 'content-type': 'application/json' }, payload: good, status: 401 },
        { name: 'bad token', headers: { 'content-type': 'application/json', authorization: 'Bearer x.y.z' }, payload: good, status: 401 },
        { name: 'malformed JSON', headers: { ...auth, 'content-type': 'application/json' }, payload: '{"items": [', status: 400 },
        { name: 'missing name', headers: { ...auth, 'content-type': 'application/json' }, payload: JSON.stringify({ items: [{ images: ['http://a/b.png'] }] }), status: 400 },
        { name: 'malformed XML', headers: { ...auth, 'content-type': 'application/xml' }, payload: '<items><item>', status: 400 },
        { name: 'text/plain', headers: { ...auth, 'content-type': 'text/plain' }, payload: 'hello', status: 415 },
        { name: 'form', headers: { ...auth, 'content-type': 'application/x-www-form-urlencoded' }, payload: 'a=b', status: 415 }
      ]
      for (const attempt of attempts) {
        const response = await app.inject({ method: 'POST', url: '/v1/dumps', headers: { ...attempt.headers, accept: 'application/json' }, payload: attempt.payload })
        t.equal(response.statusCode, attempt.status, attempt.name)
        t.type(response.json().message, 'string', `${attempt.name}: says what is wrong`)
      }
      const missing = await app.inject({ method: 'POST', url: '/v1/dumps', headers: { ...auth, 'content-type': 'application/json' }, payload: JSON.stringify({ items: [{ name: 'a', images: ['http://a/b.png'] }, { images: ['http://a/b.png'] }] }) })
      t.match(missing.json().message, /items\[1\]/, 'a 400 names the item index')
      t.equal(await countRows(app), rows, 'no request row was written')
      t.same(await filesUnder(storageDir), files, 'no file was written')
    })

    t.test('an image that cannot be written fails with IO, and the service keeps serving', async (t) => {
      const principal = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
      // the next request's folder cannot be created: a plain file stands where it should be
      const next = Number((await app.persistence.db.selectFrom('requests').select((eb) => eb.fn.max('id').as('m')).executeTakeFirstOrThrow()).m) + 1
      const blocker = join(storageDir, String(principal.userid), String(next))
      await mkdir(dirname(blocker), { recursive: true })
      await writeFile(blocker, 'not a folder')
      const response = await postDump(app, token, 'json', [{ name: 'IO', images: [origin.url('/png/1')] }])
      t.equal(response.json().requestId, next)
      t.match(response.json().items[0].images[0], { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'IO' } })
      t.equal((await postDump(app, token, 'json', [{ name: 'after', images: [origin.url('/png/1')] }])).json().status, 'SUCCESS')
    })
  })

  t.test(`${engine}: a batch of 1000 items with 10 images each`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const items = Array.from({ length: 1000 }, (_, i) => ({
      name: `Item ${i}`,
      images: Array.from({ length: 10 }, (_, j) => origin.url(`/png/${i * 10 + j}?kb=20`))
    }))
    const response = await postDump(app, token, 'xml', items, { accept: 'application/json' })
    t.equal(response.statusCode, 200)
    const body = response.json()
    t.equal(body.status, 'SUCCESS')
    t.equal(body.items.length, 1000)
    t.equal(body.items[999].images[9].imageId, 10000)
    t.equal((await filesUnder(storageDir)).length, 10000, 'every image is on disk')
    const row = await app.persistence.db.selectFrom('requests').select(['status']).where('id', '=', body.requestId).executeTakeFirstOrThrow()
    t.equal(Number(row.status), 1, 'and the dump is logged complete')
  })

  t.test(`${engine}: downloads stay under the concurrency cap`, async (t) => {
    const { app } = await buildTestApp(t, engine, { DOWNLOAD_CONCURRENCY: '4' })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    origin.resetCounters()
    const images = Array.from({ length: 24 }, (_, i) => origin.url(`/delay/50/png/${i}`))
    const response = await postDump(app, token, 'json', [{ name: 'many', images }])
    t.equal(response.json().status, 'SUCCESS')
    t.ok(origin.maxInFlight <= 4, `the origin saw at most 4 requests at once (saw ${origin.maxInFlight})`)
    t.ok(origin.maxInFlight >= 2, 'and downloads did overlap')
  })

  t.test(`${engine}: the SSRF guard refuses private addresses without connecting`, async (t) => {
    const { app } = await buildTestApp(t, engine, { ALLOW_PRIVATE_NETWORKS: 'false' })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const port = origin.port
    const urls = [
      `http://127.0.0.1:${port}/png/1`, `http://localhost:${port}/png/1`, `http://127.1:${port}/png/1`,
      `http://2130706433:${port}/png/1`, `http://0x7f000001:${port}/png/1`, `http://[::1]:${port}/png/1`,
      `http://[::ffff:127.0.0.1]:${port}/png/1`, `http://0.0.0.0:${port}/png/1`, 'http://169.254.169.254/latest/meta-data/',
      `http://10.0.0.1:${port}/`, `http://[fd00::1]:${port}/`, `http://224.0.0.1:${port}/`
    ]
    origin.resetCounters()
    const response = await postDump(app, token, 'json', [{ name: 'ssrf', images: urls }])
    t.equal(response.statusCode, 200)
    for (const image of response.json().items[0].images as Image[]) {
      t.match(image, { status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'BLOCKED_ADDRESS' } }, image.url)
    }
    t.equal(origin.connections, 0, 'not a single connection reached the origin')
  })
}

t.test('crash recovery: an incomplete row is resumed at start, keeping the outcomes it recorded', async (t) => {
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-recovery-'))
  t.teardown(() => rm(storageDir, { recursive: true, force: true }))
  const { app, database } = await buildTestApp(t, 'sqlite', { STORAGE_DIR: storageDir })
  const user = (await app.imageDumpUsers.findByUsername(sampleUsers.bronze.username))!
  // what a process killed mid-dump leaves: the admitted row, image 1 recorded with its
  // file, a temporary file of image 2, and image 3 finished after the last recorded batch
  const urls = [origin.url('/png/1'), origin.url('/png/2'), origin.url('/png/3')]
  const { runBy, ...record } = app.dumps.admissionRecord({ items: [{ name: 'A', images: urls.slice(0, 2) }, { name: 'B', images: urls.slice(2) }] }, 'xml')
  const row = await app.persistence.db.insertInto('requests').values({ userid: user.userid, ...record, run_by: runBy, status: 0 }).executeTakeFirstOrThrow()
  const id = Number(row.insertId)
  const one = makePng(1)
  await createDumpImages(app.persistence.db, app.persistence.engine).record(id, 0, [
    { imageId: 1, url: urls[0]!, status: 'SUCCESS', location: `/v1/dumps/${id}/images/1`, contentType: 'image/png', bytes: one.length, sha256: sha256(one) }
  ])
  const folder = join(storageDir, String(user.userid), String(id))
  await mkdir(folder, { recursive: true })
  await writeFile(join(folder, '1.png'), one)
  await writeFile(join(folder, '2.part'), 'half an image')
  await writeFile(join(folder, '3.png'), makePng(99))
  await app.close()

  origin.resetCounters()
  const { app: restarted } = await buildTestApp(t, 'sqlite', { STORAGE_DIR: storageDir }, database)
  await restarted.dumps.settled()
  const resumed = await restarted.persistence.db.selectFrom('requests').selectAll().where('id', '=', id).executeTakeFirstOrThrow()
  t.equal(Number(resumed.status), 1, 'the row is complete')
  t.equal(resumed.resumes, 1, 'after one resumption')
  const xml = Buffer.from(resumed.data!).toString('utf8')
  t.match(xml, new RegExp(`^<\\?xml[^>]*\\?><result><requestId>${id}</requestId><status>SUCCESS</status><items>`), 'the final record, in the format of the request')
  t.notMatch(xml, /<progress>/, 'without progress: a complete record is the v1 answer')
  for (const n of [1, 2, 3]) t.match(xml, `<sha256>${sha256(makePng(n))}</sha256>`, `image ${n} succeeded with its own bytes`)
  t.same([...origin.paths].sort(), ['/png/2', '/png/3'], 'only the images without a recorded outcome were downloaded again')
  t.same((await readdir(folder)).sort(), ['1.png', '2.png', '3.png'], 'no temporary file is left')
  for (const n of [1, 2, 3]) {
    t.same(await readFile(join(folder, `${n}.png`)), makePng(n), `${n}.png holds the bytes its record describes`)
  }
})

t.test('a running dump shows its progress: PENDING, the finished images, the counts; in JSON and XML', async (t) => {
  const { app } = await buildTestApp(t, 'sqlite', env)
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
  const auth = { authorization: `Bearer ${token}` }
  for (const format of ['json', 'xml'] as const) {
    const key = `progress-${format}`
    origin.resetCounters()
    const answer = postDump(app, token, format, [
      { name: 'quick', images: [origin.url('/png/1'), origin.url('/status/404')] },
      { name: 'held', images: [origin.url(`/held/${key}/png/3`)] }
    ])
    await origin.waitForRequests(3)
    const requestId = Number((await app.persistence.db.selectFrom('requests').select('id').where('status', '=', 0).executeTakeFirstOrThrow()).id)
    const get = () => app.inject({ method: 'GET', url: `/v1/dumps/${requestId}`, headers: format === 'xml' ? { ...auth, accept: 'application/xml' } : auth })
    // the first two outcomes are recorded within the recording delay
    const deadline = Date.now() + 10_000
    let running = await get()
    while (!running.body.includes(format === 'json' ? '"done":2' : '<done>2</done>')) {
      if (Date.now() > deadline) throw new Error(`the outcomes were not recorded: ${running.body}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
      running = await get()
    }
    t.equal(running.statusCode, 200)
    t.equal(running.headers['x-dump-complete'], 'false')
    if (format === 'json') {
      const body = running.json()
      t.match(body, { requestId, status: 'PENDING', progress: { total: 3, done: 2, succeeded: 1, failed: 1 } })
      t.same(Object.keys(body), ['requestId', 'status', 'progress', 'items'])
      t.same(statuses(body), ['PENDING', [1, 'PARTIAL', [[1, 'SUCCESS', undefined, undefined], [2, 'FAILURE', 'HTTP_ERROR', 404]]], [2, 'PENDING', [[3, 'PENDING', undefined, undefined]]]])
      t.match(body.items[0].images[0], { location: `/v1/dumps/${requestId}/images/1`, contentType: 'image/png', sha256: sha256(makePng(1)) })
    } else {
      t.match(running.headers['content-type'], /^application\/xml/)
      t.match(running.body, `<result><requestId>${requestId}</requestId><status>PENDING</status><progress><total>3</total><done>2</done><succeeded>1</succeeded><failed>1</failed></progress><items>`)
      t.match(running.body, `<image><imageId>3</imageId><url>${origin.url(`/held/${key}/png/3`)}</url><status>PENDING</status></image>`)
    }
    t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}/images/1`, headers: auth })).statusCode, 200, 'a recorded success is served at once')
    t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${requestId}/images/3`, headers: auth })).statusCode, 404, 'a pending image is not')

    origin.release(key)
    const done = await answer
    t.equal(done.statusCode, 200)
    const complete = await get()
    t.equal(complete.headers['x-dump-complete'], 'true')
    t.equal(complete.body, done.body, 'once complete, the record is the answer, without progress')
    t.notMatch(complete.body, /"progress"|<progress>/)
  }
})
