/**
 * Revalidation: a URL the user stored before is asked for with the validators its origin
 * sent then (If-None-Match / If-Modified-Since), and a 304 reuses the stored bytes.
 *
 * The origin here is a node:http server of the test's own, whose every resource says
 * which validators it sends and whether it answers them; it records each request's
 * conditional headers, its status and the body bytes it sent.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { makeJpeg, makePng } from '../helpers/images.js'
import { postDump, type TestItem } from '../helpers/dumps.js'
import { createDumpImages } from '../../db/dump-images.js'

interface Resource {
  bytes: Buffer
  contentType?: string
  etag?: string
  lastModified?: string
  /** answers 304 when the request's validators match (default true) */
  honours?: boolean
  /** answers 304 to every request, validators or not */
  always304?: boolean
  /** 302 to this path instead */
  redirectTo?: string
  /** a conditional request is answered only once `open` resolves; `reached` is called when one arrives */
  gate?: { reached: () => void, open: Promise<void> }
}

interface Seen {
  path: string
  ifNoneMatch?: string
  ifModifiedSince?: string
  status: number
  bodyBytes: number
}

function startValidatorOrigin () {
  const resources = new Map<string, Resource>()
  const seen: Seen[] = []
  const server = createServer((req: IncomingMessage, res) => {
    const path = req.url ?? '/'
    const resource = resources.get(path)
    const record = (status: number, bodyBytes = 0): void => {
      seen.push({
        path,
        ...(req.headers['if-none-match'] === undefined ? {} : { ifNoneMatch: req.headers['if-none-match'] }),
        ...(req.headers['if-modified-since'] === undefined ? {} : { ifModifiedSince: req.headers['if-modified-since'] }),
        status,
        bodyBytes
      })
    }
    if (resource === undefined) {
      record(404)
      res.writeHead(404).end()
      return
    }
    if (resource.redirectTo !== undefined) {
      record(302)
      res.writeHead(302, { location: resource.redirectTo }).end()
      return
    }
    const validators = {
      ...(resource.etag === undefined ? {} : { etag: resource.etag }),
      ...(resource.lastModified === undefined ? {} : { 'last-modified': resource.lastModified })
    }
    const inm = req.headers['if-none-match']
    const ims = req.headers['if-modified-since']
    const answer = (): void => {
      // RFC 9110 §13.1.2/§13.1.3: If-None-Match (weak comparison) decides when present
      const strip = (tag: string): string => tag.replace(/^W\//, '')
      const notModified = resource.always304 === true || ((resource.honours ?? true) && (inm !== undefined
        ? resource.etag !== undefined && inm.split(',').map((tag) => strip(tag.trim())).includes(strip(resource.etag))
        : ims !== undefined && resource.lastModified !== undefined && ims === resource.lastModified))
      if (notModified) {
        record(304)
        res.writeHead(304, validators).end()
        return
      }
      record(200, resource.bytes.length)
      res.writeHead(200, { 'content-type': resource.contentType ?? 'image/png', 'content-length': resource.bytes.length, ...validators }).end(resource.bytes)
    }
    if (resource.gate !== undefined && (inm !== undefined || ims !== undefined)) {
      resource.gate.reached()
      void resource.gate.open.then(answer)
      return
    }
    answer()
  })
  return new Promise<{ url: (path: string) => string, resources: Map<string, Resource>, seen: Seen[], of: (path: string) => Seen[], close: () => Promise<void> }>((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      resolve({
        url: (path) => `http://127.0.0.1:${port}${path}`,
        resources,
        seen,
        of: (path) => seen.filter((s) => s.path === path),
        close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })
      })
    })
  })
}

const origin = await startValidatorOrigin()
t.teardown(() => origin.close())

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')
const env = { DOWNLOAD_TIMEOUT_MS: '5000', DOWNLOAD_CONCURRENCY: '8' }
const LAST_MODIFIED = 'Tue, 01 Dec 2026 10:00:00 GMT'

type Image = { imageId: number, url: string, status: string, location?: string, bytes?: number, sha256?: string, width?: number, height?: number, reused?: boolean, error?: { type: string, httpStatus?: number } }
type Answer = { requestId: number, status: string, items: Array<{ images: Image[] }> }
const imagesOf = (answer: Answer): Image[] => answer.items.flatMap((item) => item.images)

let serial = 0

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: a URL stored before is revalidated`, async (t) => {
    const { app } = await buildTestApp(t, engine, env)
    const alice = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const bob = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
    const get = (token: string, url: string) => app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } })
    /** a path of its own for each resource, so no test sees another's validators */
    const serve = (resource: Resource): string => {
      const path = `/r/${engine}/${++serial}`
      origin.resources.set(path, resource)
      return path
    }
    const del = (token: string, url: string) => app.inject({ method: 'DELETE', url, headers: { authorization: `Bearer ${token}` } })
    const useridOf = async (requestId: number): Promise<number> =>
      (await app.persistence.db.selectFrom('requests').select('userid').where('id', '=', requestId).executeTakeFirstOrThrow()).userid
    /** The objects in the store under a dump's folder (what was written for it), through the store. */
    const objectsOf = async (requestId: number): Promise<string[]> => {
      const keys: string[] = []
      for await (const key of app.dumps.store.list(`${await useridOf(requestId)}/${requestId}/`)) keys.push(key)
      return keys.sort()
    }
    const reusedCount = async (): Promise<number> => Number(/^image_dump_images_reused_total (\d+)/m.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0)
    const dump = async (token: string, items: TestItem[]): Promise<Answer> => {
      const response = await postDump(app, token, 'json', items)
      if (response.statusCode !== 200) throw new Error(`dump: ${response.statusCode} ${response.body}`)
      return response.json()
    }

    t.test('an ETag origin answers 304 and the stored bytes are reused', async (t) => {
      const png = makePng(501)
      const path = serve({ bytes: png, etag: '"v1"' })
      const first = imagesOf(await dump(alice, [{ name: 'A', images: [origin.url(path)] }]))[0]!
      t.match(first, { status: 'SUCCESS', sha256: sha256(png) })
      t.notOk('reused' in first, 'a downloaded image has no reused field')
      t.notOk(origin.of(path)[0]!.ifNoneMatch, 'the first request is unconditional')

      const storedBytes = async (): Promise<number> => Number(/^image_dump_stored_bytes_total (\d+)/m.exec((await app.inject({ method: 'GET', url: '/metrics' })).body)![1])
      const bytesBefore = await storedBytes()
      const answer = await dump(alice, [{ name: 'A', images: [origin.url(path)] }])
      const second = imagesOf(answer)[0]!
      t.equal(await storedBytes(), bytesBefore, 'no bytes counted as stored again')
      const requests = origin.of(path)
      t.equal(requests.length, 2)
      t.match(requests[1], { ifNoneMatch: '"v1"', status: 304, bodyBytes: 0 }, 'the origin saw the stored ETag and sent no body')
      t.same(second, {
        imageId: 1,
        url: origin.url(path),
        status: 'SUCCESS',
        location: `/v1/dumps/${answer.requestId}/images/1`,
        contentType: 'image/png',
        bytes: png.length,
        sha256: sha256(png),
        width: 8,
        height: 8,
        reused: true
      }, 'SUCCESS, reused, with the earlier outcome\'s type, size, digest and dimensions')
      const served = await get(alice, second.location!)
      t.equal(served.statusCode, 200)
      t.same(served.rawPayload, png, 'the served bytes are the stored ones')
      const record = await get(alice, `/v1/dumps/${answer.requestId}`)
      t.match(record.json(), { status: 'SUCCESS', items: [{ images: [{ reused: true }] }] }, 'the stored record says so too')
      const recorded = await createDumpImages(app.persistence.db, app.persistence.engine).outcomes(answer.requestId)
      t.match(recorded.get(1), { status: 'SUCCESS', sha256: sha256(png), reused: true }, 'recorded as a success with the same digest (a reference to the same bytes)')

      const metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
      t.match(metrics, /^image_dump_images_reused_total [1-9]/m, 'counted as reused')
    })

    t.test('a weak ETag is sent back as it came, and the answer in XML says reused', async (t) => {
      const path = serve({ bytes: makePng(502), etag: 'W/"weak-1"' })
      const items = [{ name: 'W', images: [origin.url(path)] }]
      t.equal((await postDump(app, alice, 'xml', items)).statusCode, 200)
      const key = { 'idempotency-key': `weak-etag-${engine}` }
      const response = await postDump(app, alice, 'xml', items, key)
      t.equal(response.statusCode, 200)
      t.match(origin.of(path)[1], { ifNoneMatch: 'W/"weak-1"', status: 304 })
      t.match(response.body, /<height>8<\/height><reused>true<\/reused><\/image>/, 'an element of the image')
      const requestId = /<requestId>(\d+)<\/requestId>/.exec(response.body)![1]
      t.match((await get(alice, `/v1/dumps/${requestId}`)).body, /<reused>true<\/reused>/, 'in the stored XML record')
      const replay = await postDump(app, alice, 'xml', items, { ...key, accept: 'application/json' })
      t.equal(replay.statusCode, 200)
      t.equal((replay.json() as Answer).items[0]!.images[0]!.reused, true, 'a boolean when the XML record is answered as JSON')
    })

    t.test('a Last-Modified-only origin is asked with If-Modified-Since', async (t) => {
      const png = makePng(503)
      const path = serve({ bytes: png, lastModified: LAST_MODIFIED })
      await dump(alice, [{ name: 'L', images: [origin.url(path)] }])
      const second = imagesOf(await dump(alice, [{ name: 'L', images: [origin.url(path)] }]))[0]!
      const request = origin.of(path)[1]!
      t.equal(request.ifModifiedSince, LAST_MODIFIED, 'the stored Last-Modified, as sent')
      t.notOk(request.ifNoneMatch, 'no ETag to send')
      t.equal(request.status, 304)
      t.match(second, { status: 'SUCCESS', sha256: sha256(png), reused: true })
    })

    t.test('an origin that ignores validators answers 200: downloaded as before, validators updated', async (t) => {
      const png = makePng(504)
      const path = serve({ bytes: png, etag: '"a"', honours: false })
      await dump(alice, [{ name: 'I', images: [origin.url(path)] }])
      origin.resources.get(path)!.etag = '"b"'
      const second = imagesOf(await dump(alice, [{ name: 'I', images: [origin.url(path)] }]))[0]!
      t.match(origin.of(path)[1], { ifNoneMatch: '"a"', status: 200, bodyBytes: png.length })
      t.match(second, { status: 'SUCCESS', sha256: sha256(png) })
      t.notOk('reused' in second, 'downloaded, not reused')
      await dump(alice, [{ name: 'I', images: [origin.url(path)] }])
      t.equal(origin.of(path)[2]!.ifNoneMatch, '"b"', 'the next dump sends the ETag of the last download')
    })

    t.test('an origin whose bytes changed answers 200: the new bytes are stored, the old ones stay with their dump', async (t) => {
      const before = makePng(505)
      const after = makeJpeg(505)
      const path = serve({ bytes: before, etag: '"old"' })
      const first = await dump(alice, [{ name: 'C', images: [origin.url(path)] }])
      Object.assign(origin.resources.get(path)!, { bytes: after, contentType: 'image/jpeg', etag: '"new"' })
      const answer = await dump(alice, [{ name: 'C', images: [origin.url(path)] }])
      const second = imagesOf(answer)[0]!
      t.match(origin.of(path)[1], { ifNoneMatch: '"old"', status: 200, bodyBytes: after.length })
      t.match(second, { status: 'SUCCESS', contentType: 'image/jpeg', bytes: after.length, sha256: sha256(after) })
      t.notOk('reused' in second, 'not reused')
      t.same((await get(alice, second.location!)).rawPayload, after, 'the new bytes are served')
      t.same((await get(alice, `/v1/dumps/${first.requestId}/images/1`)).rawPayload, before, 'the earlier dump still serves its own bytes')
      t.same(await objectsOf(answer.requestId), [`${await useridOf(answer.requestId)}/${answer.requestId}/1.jpg`], 'one new object, of the new type')
      t.equal((await objectsOf(first.requestId)).length, 1, 'the earlier object stays with its dump')
    })

    t.test('a 304 to a request without validators is a failure, not a reuse', async (t) => {
      const plain = serve({ bytes: makePng(506) })
      const tagged = serve({ bytes: makePng(507), etag: '"t"' })
      const first = imagesOf(await dump(alice, [{ name: 'P', images: [origin.url(plain), origin.url(tagged)] }]))
      t.match(first, [{ status: 'SUCCESS' }, { status: 'SUCCESS' }])
      origin.resources.get(plain)!.always304 = true
      origin.resources.get(tagged)!.always304 = true
      const second = imagesOf(await dump(alice, [{ name: 'P', images: [origin.url(plain), origin.url(tagged)] }]))
      const request = origin.of(plain)[1]!
      t.notOk(request.ifNoneMatch ?? request.ifModifiedSince, 'nothing to revalidate the plain URL with')
      t.match(second[0], { status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 304 } }, 'an unasked-for 304 is an HTTP error')
      t.notOk('reused' in second[0]!)
      t.match(second[1], { status: 'SUCCESS', reused: true }, 'while the URL with validators is reused')
    })

    t.test("another user's earlier download is never used", async (t) => {
      const png = makePng(508)
      const path = serve({ bytes: png, etag: '"shared"' })
      await dump(bob, [{ name: 'B', images: [origin.url(path)] }])
      const mine = imagesOf(await dump(alice, [{ name: 'A', images: [origin.url(path)] }]))[0]!
      t.notOk(origin.of(path)[1]!.ifNoneMatch, "alice's first request is unconditional")
      t.match(mine, { status: 'SUCCESS', sha256: sha256(png) })
      t.notOk('reused' in mine, 'downloaded for alice')
      const again = imagesOf(await dump(alice, [{ name: 'A', images: [origin.url(path)] }]))[0]!
      t.match(again, { status: 'SUCCESS', reused: true }, 'her own download is reused the next time')
    })

    t.test('an earlier dump deleted, and its bytes with it, is downloaded again, unconditionally', async (t) => {
      const gone = makePng(509)
      const kept = makePng(510)
      const gonePath = serve({ bytes: gone, etag: '"g"' })
      const keptPath = serve({ bytes: kept, etag: '"k"' })
      const first = await dump(alice, [{ name: 'R', images: [origin.url(gonePath)] }])
      await dump(alice, [{ name: 'S', images: [origin.url(keptPath)] }])
      t.equal((await del(alice, `/v1/dumps/${first.requestId}`)).statusCode, 204)
      t.same(await objectsOf(first.requestId), [], 'its object is removed from the store')
      const answer = await dump(alice, [{ name: 'R', images: [origin.url(gonePath), origin.url(keptPath)] }])
      const [again, reused] = imagesOf(answer)
      t.match(origin.of(gonePath)[1], { status: 200, bodyBytes: gone.length })
      t.notOk(origin.of(gonePath)[1]!.ifNoneMatch, 'no validators for bytes that are gone')
      t.match(again, { status: 'SUCCESS', sha256: sha256(gone) })
      t.notOk('reused' in again!, 'downloaded, not reused')
      t.same((await get(alice, again!.location!)).rawPayload, gone, 'and served')
      t.match(reused, { status: 'SUCCESS', reused: true }, 'the bytes of the dump still there are reused')
      t.same(await objectsOf(answer.requestId), [`${await useridOf(answer.requestId)}/${answer.requestId}/1.png`], 'one object written, for the download only')
    })

    t.test('a reused image is a reference: deleting the dump that stored the bytes keeps them', async (t) => {
      const png = makePng(516)
      const path = serve({ bytes: png, etag: '"ref"' })
      const first = await dump(alice, [{ name: 'F', images: [origin.url(path)] }])
      const second = await dump(alice, [{ name: 'F', images: [origin.url(path)] }])
      t.match(imagesOf(second)[0], { status: 'SUCCESS', sha256: sha256(png), reused: true })
      t.same(await objectsOf(second.requestId), [], 'nothing written for the reuse: no object, no link')
      const earlierObjects = await objectsOf(first.requestId)
      t.equal(earlierObjects.length, 1)
      t.equal((await del(alice, `/v1/dumps/${first.requestId}`)).statusCode, 204)
      t.same(await objectsOf(first.requestId), earlierObjects, 'the object stays, in the deleted dump\'s folder: the reuse references it')
      const served = await get(alice, `/v1/dumps/${second.requestId}/images/1`)
      t.equal(served.statusCode, 200)
      t.same(served.rawPayload, png, 'the reused image is still served')
      t.equal(served.headers.etag, `"${sha256(png)}"`, 'with the ETag of its bytes')
      const third = imagesOf(await dump(alice, [{ name: 'F', images: [origin.url(path)] }]))[0]!
      t.match(origin.of(path)[2], { ifNoneMatch: '"ref"', status: 304 }, 'the validators kept with the reuse are still used')
      t.match(third, { status: 'SUCCESS', sha256: sha256(png), reused: true })
    })

    t.test('a reuse whose earlier dump is deleted before the reuse is recorded is downloaded again', async (t) => {
      const png = makePng(517)
      const path = serve({ bytes: png, etag: '"race"' })
      const first = await dump(alice, [{ name: 'X', images: [origin.url(path)] }])
      let reached!: () => void
      let open!: () => void
      const arrived = new Promise<void>((resolve) => { reached = resolve })
      origin.resources.get(path)!.gate = { reached, open: new Promise<void>((resolve) => { open = resolve }) }
      const reusedBefore = await reusedCount()
      const running = dump(alice, [{ name: 'X', images: [origin.url(path)] }, { name: 'Y', images: [`${origin.url(path)}#twice`] }])
      // the look-up found the earlier object; the origin holds its 304 until the earlier
      // dump, the only one with these bytes, and its object are gone
      await arrived
      t.equal((await del(alice, `/v1/dumps/${first.requestId}`)).statusCode, 204)
      t.same(await objectsOf(first.requestId), [], 'the deletion removed the object')
      open()
      const answer = await running
      t.same(origin.of(path).map((seen) => [seen.ifNoneMatch ?? null, seen.status]), [[null, 200], ['"race"', 304], [null, 200]],
        'revalidated (304), then downloaded again without validators')
      for (const image of imagesOf(answer)) {
        t.match(image, { status: 'SUCCESS', sha256: sha256(png) })
        t.notOk('reused' in image, `image ${image.imageId}: downloaded, not reused`)
        t.same((await get(alice, image.location!)).rawPayload, png, `image ${image.imageId} is served`)
      }
      t.match((await get(alice, `/v1/dumps/${answer.requestId}`)).json(), { status: 'SUCCESS', items: [{ images: [{ status: 'SUCCESS' }] }, { images: [{ status: 'SUCCESS' }] }] })
      t.same(await objectsOf(answer.requestId), [`${await useridOf(answer.requestId)}/${answer.requestId}/1.png`], 'the bytes are stored again, once')
      t.equal(await reusedCount(), reusedBefore, 'not counted as reused')
    })

    t.test('an earlier dump whose record was removed is not reused from', async (t) => {
      const removedPath = serve({ bytes: makePng(511), etag: '"r"' })
      const keptPath = serve({ bytes: makePng(514), etag: '"k"' })
      const removed = await dump(alice, [{ name: 'D', images: [origin.url(removedPath)] }])
      await dump(alice, [{ name: 'K', images: [origin.url(keptPath)] }])
      await createDumpImages(app.persistence.db, app.persistence.engine).removeOf(removed.requestId)
      const [again, reused] = imagesOf(await dump(alice, [{ name: 'D', images: [origin.url(removedPath), origin.url(keptPath)] }]))
      t.notOk(origin.of(removedPath)[1]!.ifNoneMatch, 'no outcome behind the validators: unconditional')
      t.notOk('reused' in again!, 'downloaded')
      t.match(reused, { status: 'SUCCESS', reused: true }, 'the dump still on record is reused from')
    })

    t.test('a URL repeated in a re-dump is revalidated once and every occurrence is reused', async (t) => {
      const png = makePng(512)
      const path = serve({ bytes: png, etag: '"twice"' })
      await dump(alice, [{ name: 'T', images: [origin.url(path)] }])
      const answer = await dump(alice, [{ name: 'T', images: [origin.url(path), `${origin.url(path)}#again`] }, { name: 'U', images: [origin.url(path)] }])
      t.equal(origin.of(path).length, 2, 'one request for the three images')
      for (const image of imagesOf(answer)) {
        t.match(image, { status: 'SUCCESS', location: `/v1/dumps/${answer.requestId}/images/${image.imageId}`, sha256: sha256(png), reused: true })
        t.same((await get(alice, image.location!)).rawPayload, png, `image ${image.imageId} is served`)
      }
    })

    t.test('validators are sent on every redirect hop of the URL as listed', async (t) => {
      const png = makePng(513)
      const target = serve({ bytes: png, etag: '"hop"' })
      const listed = serve({ bytes: Buffer.alloc(0), redirectTo: target })
      await dump(alice, [{ name: 'H', images: [origin.url(listed)] }])
      const second = imagesOf(await dump(alice, [{ name: 'H', images: [origin.url(listed)] }]))[0]!
      t.match(origin.of(listed)[1], { ifNoneMatch: '"hop"', status: 302 })
      t.match(origin.of(target)[1], { ifNoneMatch: '"hop"', status: 304 })
      t.match(second, { status: 'SUCCESS', sha256: sha256(png), reused: true })
    })
  })
}
