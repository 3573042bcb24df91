/**
 * DELETE /v1/dumps/{id}: the dump's record and outcomes go, and the stored bytes no other
 * dump of the user references; bytes another dump also has stay. The quota slot is not
 * given back. A running dump cannot be deleted; an unknown or another user's dump is 404.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makePng } from '../helpers/images.js'
import { filesUnder, postDump } from '../helpers/dumps.js'
import { createDumpImages } from '../../db/dump-images.js'
import { createFileStore } from '../../lib/object-store/file-store.js'
import type { ImageResult } from '../../schemas/dump.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: DELETE /v1/dumps/{id}`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    const user = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const remove = async (id: number, headers: Record<string, string> = auth) => await app.inject({ method: 'DELETE', url: `/v1/dumps/${id}`, headers })
    const get = async (url: string) => await app.inject({ method: 'GET', url, headers: auth })

    t.test('removes the record and the bytes only it had; bytes shared with another dump stay', async (t) => {
      const shared = origin.url('/png/601')
      const first = (await postDump(app, token, 'json', [{ name: 'Old', images: [shared, origin.url('/png/602')] }, { name: 'Failed', images: [origin.url('/status/404?k=del')] }])).json()
      const second = (await postDump(app, token, 'json', [{ name: 'New', images: [origin.url('/png/601?k=2')] }])).json()
      const folder = `${user.userid}/${first.requestId}`
      t.same(await filesUnder(storageDir), [`${folder}/1.png`, `${folder}/2.png`], 'the second dump\'s bytes are the first one\'s object')
      const quotaBefore = (await get('/v1/quota')).json()

      const deleted = await remove(first.requestId)
      t.equal(deleted.statusCode, 204)
      t.equal(deleted.body, '', 'no body')
      t.same(await filesUnder(storageDir), [`${folder}/1.png`], 'its unshared bytes are gone; the shared ones stay, where they are')
      const kept = await get(second.items[0].images[0].location)
      t.equal(kept.statusCode, 200, 'the other dump still serves its image')
      t.same(kept.rawPayload, makePng(601))

      t.equal((await get(`/v1/dumps/${first.requestId}`)).statusCode, 404, 'the dump is gone')
      for (const n of [1, 2, 3]) t.equal((await get(`/v1/dumps/${first.requestId}/images/${n}`)).statusCode, 404, `its image ${n} too`)
      t.equal((await get(`/v1/dumps/${first.requestId}/events`)).statusCode, 404, 'and its events')
      const retry = await app.inject({ method: 'POST', url: `/v1/dumps/${first.requestId}/retry`, headers: auth })
      t.equal(retry.statusCode, 404, 'it cannot be retried')
      const listed = (await get('/v1/dumps?limit=100')).json().dumps.map((dump: { requestId: number }) => dump.requestId)
      t.notOk(listed.includes(first.requestId), 'it is not in the list')
      t.ok(listed.includes(second.requestId), 'the other one is')
      t.equal((await createDumpImages(app.persistence.db, app.persistence.engine).outcomes(first.requestId)).size, 0, 'its outcomes are deleted')
      const row = await app.persistence.db.selectFrom('requests').select(['data', 'deleted']).where('id', '=', first.requestId).executeTakeFirstOrThrow()
      t.same({ data: row.data, deleted: Number(row.deleted) }, { data: null, deleted: 1 }, 'its row stays, marked, without its record')

      const quotaAfter = (await get('/v1/quota')).json()
      t.equal(quotaAfter.used, quotaBefore.used, 'the quota slot is not given back')
      t.equal((await remove(first.requestId)).statusCode, 404, 'deleting it again: 404')

      t.equal((await remove(second.requestId)).statusCode, 204)
      t.same(await filesUnder(storageDir), [], 'once no dump references the shared bytes, they go too')
      t.equal((await app.persistence.db.selectFrom('stored_objects').selectAll().where('userid', '=', user.userid).execute()).length, 0, 'and the user has no objects left')
    })

    t.test('bytes deleted and downloaded again are stored again', async (t) => {
      const first = (await postDump(app, token, 'json', [{ name: 'One', images: [origin.url('/png/611')] }])).json()
      t.equal((await remove(first.requestId)).statusCode, 204)
      const again = (await postDump(app, token, 'json', [{ name: 'Two', images: [origin.url('/png/611')] }])).json()
      t.same(await filesUnder(storageDir), [`${user.userid}/${again.requestId}/1.png`], 'an object of the new dump')
      t.same((await get(again.items[0].images[0].location)).rawPayload, makePng(611))
      t.equal((await remove(again.requestId)).statusCode, 204)
    })

    t.test('404 for an unknown dump and for another user\'s; 401 without a token', async (t) => {
      const mine = (await postDump(app, token, 'json', [{ name: 'Mine', images: [origin.url('/png/621')] }])).json()
      const other = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
      const refused = await remove(mine.requestId, { authorization: `Bearer ${other}` })
      t.equal(refused.statusCode, 404)
      t.type(refused.json().message, 'string', 'says why')
      t.equal((await remove(2 ** 31 - 1)).statusCode, 404)
      t.equal((await remove(mine.requestId, {})).statusCode, 401)
      t.equal((await app.inject({ method: 'DELETE', url: '/v1/dumps/abc', headers: auth })).statusCode, 400, 'an id that is no number')
      t.equal((await get(`/v1/dumps/${mine.requestId}`)).statusCode, 200, 'the dump is untouched')
      t.equal((await remove(mine.requestId)).statusCode, 204)
    })

    t.test('409 while the dump runs; deleted once complete', async (t) => {
      const hold = `delete-${engine}`
      const accepted = await postDump(app, token, 'json', [{ name: 'Running', images: [origin.url(`/held/${hold}/png/631`), origin.url('/png/632')] }], { prefer: 'respond-async' })
      t.equal(accepted.statusCode, 202)
      const { requestId } = accepted.json()
      await origin.waitForRequests(1)
      const conflict = await remove(requestId)
      t.equal(conflict.statusCode, 409)
      t.match(conflict.json().message, /still running/)
      origin.release(hold)
      await app.dumps.backgroundSettled()
      t.equal((await get(`/v1/dumps/${requestId}`)).headers['x-dump-complete'], 'true')
      t.equal((await remove(requestId)).statusCode, 204)
      t.same(await filesUnder(storageDir), [], 'nothing of it is left')
    })

    t.test('a deletion and a dump recording the same bytes, in either order, never leave an image without its object', async (t) => {
      const store = createFileStore(storageDir)
      const dumpImages = createDumpImages(app.persistence.db, app.persistence.engine)
      const png = makePng(641)
      // a dump that downloaded the bytes and is about to record them, as a run does
      const running = async (bytes: Buffer): Promise<{ id: number, key: string }> => {
        const admission = await app.quota.admit(user.userid, 1000, { dataformat: 'json', data: Buffer.from('{}') })
        const id = admission.requestId!
        const key = `${user.userid}/${id}/1.png`
        const sink = await store.create(key, { contentType: 'image/png' })
        await sink.write([bytes], bytes.length)
        await sink.commit()
        return { id, key }
      }
      const success = (id: number, bytes = png): ImageResult => ({ imageId: 1, url: 'http://x/1.png', status: 'SUCCESS', location: `/v1/dumps/${id}/images/1`, contentType: 'image/png', bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') })

      // the recording first: it points at the deleted dump's object, which therefore stays
      const older = (await postDump(app, token, 'json', [{ name: 'Older', images: [origin.url('/png/641')] }])).json()
      const early = await running(png)
      const placement = { keys: new Map([[1, early.key]]), redundant: [] as string[] }
      t.equal(await dumpImages.record(early.id, 0, [success(early.id)], undefined, placement), 'recorded')
      t.same(placement.redundant, [early.key], 'its own object is redundant: the user had the bytes')
      await store.remove(placement.redundant)
      t.equal((await remove(older.requestId)).statusCode, 204)
      const pointed = (await dumpImages.storedImage(early.id, 1))!.key!
      t.equal(pointed, `${user.userid}/${older.requestId}/1.png`, 'the recorded image points at the older object')
      t.ok(await store.stat(pointed), 'which the deletion kept')

      // the deletion first: the recording finds no object for the bytes and keeps its own
      const other = makePng(642)
      const oldest = (await postDump(app, token, 'json', [{ name: 'Oldest', images: [origin.url('/png/642')] }])).json()
      const late = await running(other)
      t.equal((await remove(oldest.requestId)).statusCode, 204, 'the only dump with the bytes is deleted')
      t.equal(await store.stat(`${user.userid}/${oldest.requestId}/1.png`), undefined, 'and its object with it')
      const latePlacement = { keys: new Map([[1, late.key]]), redundant: [] as string[] }
      t.equal(await dumpImages.record(late.id, 0, [success(late.id, other)], undefined, latePlacement), 'recorded')
      t.same(latePlacement.redundant, [], 'nothing redundant')
      t.equal((await dumpImages.storedImage(late.id, 1))!.key, late.key, 'the image keeps the object written for it')
      t.ok(await store.stat(late.key), 'which is there')
    })
  })
}
