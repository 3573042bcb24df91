import t from 'tap'
import { createDumpImages } from '../../db/dump-images.js'
import { createRequests } from '../../db/requests.js'
import { createStoredObjects } from '../../db/stored-objects.js'
import type { ImageResult } from '../../schemas/dump.js'
import { enginesUnderTest, migratedTestDatabase } from '../helpers/db.js'

const done = { status: 'SUCCESS' as const, succeeded: 1, failed: 0 }
const success = (imageId: number): ImageResult => ({
  imageId, url: `http://x/${imageId}.png`, status: 'SUCCESS', location: `/v1/dumps/1/images/${imageId}`, contentType: 'image/png', bytes: 10 * imageId, sha256: 'ab'.repeat(32)
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the dump_images repository`, async (t) => {
    const { db } = await migratedTestDatabase(t, engine)
    const dumpImages = createDumpImages(db, engine)
    const requests = createRequests(db, engine)
    const user = await db.insertInto('users').values({ username: 'u', plan: 'gold' }).executeTakeFirstOrThrow()
    const admit = async (): Promise<number> => Number((await db.insertInto('requests').values({ userid: Number(user.insertId), dataformat: 'json', data: Buffer.from('{}') }).executeTakeFirstOrThrow()).insertId)

    t.test('records a batch in one write and reads it back as it was', async (t) => {
      const id = await admit()
      const failure: ImageResult = { imageId: 3, url: 'http://x/ü', status: 'FAILURE', error: { type: 'INTERNAL_ERROR', code: 'INVALID_URL', message: 'not an image URL: "http://ü.example/✓" – “quoted”' } }
      t.equal(await dumpImages.record(id, 0, [success(1), success(2), failure]), 'recorded')
      const outcomes = await dumpImages.outcomes(id)
      t.same([...outcomes.keys()].sort(), [1, 2, 3])
      t.same(outcomes.get(2), { status: 'SUCCESS', location: '/v1/dumps/1/images/2', contentType: 'image/png', bytes: 20, sha256: 'ab'.repeat(32) }, 'without the id and URL, which the admission record holds')
      t.same(outcomes.get(3), { status: 'FAILURE', error: failure.error }, 'text outside ASCII comes back unchanged')
      t.equal(await dumpImages.statusOf(id, 3), 'FAILURE')
      t.equal(await dumpImages.statusOf(id, 4), undefined, 'an image without a row has no outcome yet')
      t.equal((await dumpImages.outcomes(await admit())).size, 0, "another dump's outcomes are its own")
    })

    t.test('recording the same outcomes again (a retry after a lost acknowledgement) changes nothing', async (t) => {
      const id = await admit()
      await dumpImages.record(id, 0, [success(1), success(2)])
      t.equal(await dumpImages.record(id, 0, [success(2), success(3)]), 'recorded')
      t.same([...(await dumpImages.outcomes(id)).keys()].sort(), [1, 2, 3])
    })

    t.test('only the run that holds the dump records: not a run taken over, not after completion', async (t) => {
      const id = await admit()
      t.equal(await requests.claim(id, 0, 0), 1, 'the dump is taken over by run 1')
      t.equal(await dumpImages.record(id, 0, [success(1)]), 'taken', 'run 0 records nothing more')
      t.equal(await dumpImages.record(id, 1, [success(2)]), 'recorded')
      t.equal(await requests.complete(id, 1, Buffer.from('{"done":true}'), done), 'written')
      t.equal(await dumpImages.record(id, 1, [success(3)]), 'taken', 'a complete dump takes no more outcomes')
      t.same([...(await dumpImages.outcomes(id)).keys()], [2])
      t.equal(await requests.complete(id, 0, Buffer.from('{"late":true}'), done), 'taken', 'nor a final record from the run taken over')
    })

    t.test('outcomes are numbered in the order they were recorded, not by image, and a repeat takes no number', async (t) => {
      const id = await admit()
      await dumpImages.record(id, 0, [success(3), success(1)])
      await dumpImages.record(id, 0, [success(1)])
      await dumpImages.record(id, 0, [success(2)])
      const rows = await dumpImages.after(id, 0, 10)
      t.same(rows.map((row) => row.imageId), [3, 1, 2], 'in recording order')
      t.same(rows.map((row) => row.seq), [1, 2, 3], 'numbered 1, 2, 3: the repeat left no row and no number')
      t.same((await dumpImages.after(id, 2, 10)).map((row) => row.imageId), [2], 'after a number: only what came later')
      t.same((await dumpImages.after(id, 0, 2)).map((row) => row.imageId), [3, 1], 'at most limit')
      t.same(await dumpImages.countsUpTo(id, 2), { succeeded: 2, failed: 0 })
      t.same(await dumpImages.countsUpTo(id, Infinity), { succeeded: 3, failed: 0 })
    })

    t.test('an image whose URL was downloaded for another is recorded with the image that holds its file', async (t) => {
      const id = await admit()
      t.equal(await dumpImages.record(id, 0, [success(1), success(2), success(3)], new Map([[3, 1]])), 'recorded')
      t.same(await dumpImages.storedImage(id, 3), { status: 'SUCCESS', file: 1, sha256: 'ab'.repeat(32), contentType: 'image/png' }, 'served from the file of image 1')
      t.same(await dumpImages.storedImage(id, 2), { status: 'SUCCESS', file: 2, sha256: 'ab'.repeat(32), contentType: 'image/png' }, 'an image of its own')
      t.equal(await dumpImages.storedImage(id, 4), undefined, 'no outcome yet')
      t.same((await dumpImages.outcomes(id)).get(3), { status: 'SUCCESS', location: '/v1/dumps/1/images/3', contentType: 'image/png', bytes: 30, sha256: 'ab'.repeat(32) }, 'the outcome shows nothing of it')
    })

    t.test('a reuse points at the user\'s object for its bytes while there is one, and is not recorded once it is gone', async (t) => {
      const userid = Number(user.insertId)
      const earlier = await admit()
      const digest = (n: number): string => String(n).repeat(64).slice(0, 64)
      const stored = (imageId: number, sha256: string, extra: Partial<ImageResult> = {}): ImageResult => ({ ...success(imageId), sha256, ...extra })
      await dumpImages.record(earlier, 0, [stored(1, digest(1)), stored(2, digest(2))], undefined, { keys: new Map([[1, `${userid}/${earlier}/1.png`], [2, `${userid}/${earlier}/2.png`]]), redundant: [] })
      // as a removal forgets an object the user no longer references
      await createStoredObjects(engine).forget(db, userid, [digest(2)])

      const id = await admit()
      const placement = { keys: new Map([[3, `${userid}/${id}/3.png`]]), redundant: [] as string[], gone: [] as number[] }
      t.equal(await dumpImages.record(id, 0, [stored(1, digest(1), { reused: true }), stored(2, digest(2), { reused: true }), stored(3, digest(3))], undefined, placement), 'recorded')
      t.same(placement.gone, [2], 'the reuse whose object is gone is named')
      t.same(await dumpImages.storedImage(id, 1), { status: 'SUCCESS', file: 1, key: `${userid}/${earlier}/1.png`, sha256: digest(1), contentType: 'image/png' }, 'the reuse points at the earlier object, by key, with the same SHA-256')
      t.equal(await dumpImages.statusOf(id, 2), undefined, 'the other has no outcome: it is still to be downloaded')
      t.equal((await dumpImages.storedImage(id, 3))?.key, `${userid}/${id}/3.png`, 'a download in the same batch is recorded as usual')
      const objects = await db.selectFrom('stored_objects').select(['sha256', 'object_key']).where('userid', '=', userid).orderBy('sha256').execute()
      t.same(objects, [{ sha256: digest(1), object_key: `${userid}/${earlier}/1.png` }, { sha256: digest(3), object_key: `${userid}/${id}/3.png` }], 'no object is made up for the bytes that are gone')
      await t.rejects(dumpImages.record(id, 0, [stored(4, digest(1), { reused: true })], undefined, { keys: new Map(), redundant: [] }), TypeError, 'a reuse needs somewhere to say it is gone')
    })

    t.test('an image without an outcome cannot be recorded', async (t) => {
      const id = await admit()
      await t.rejects(dumpImages.record(id, 0, [{ imageId: 1, url: 'http://x/1', status: 'PENDING' }]), TypeError)
      t.equal((await dumpImages.outcomes(id)).size, 0)
    })
  })
}
