import t from 'tap'
import { createHash } from 'node:crypto'
import { createDumpImages } from '../../db/dump-images.js'
import { createStoredObjects } from '../../db/stored-objects.js'
import { createUrlValidators, type ValidatorsEntry } from '../../db/url-validators.js'
import type { ImageResult } from '../../schemas/dump.js'
import { enginesUnderTest, migratedTestDatabase } from '../helpers/db.js'

const DATE = 'Tue, 01 Dec 2026 10:00:00 GMT'
// bytes of their own for each image of each dump
const digest = (requestId: number, imageId: number): string => createHash('sha256').update(`${requestId}/${imageId}`).digest('hex')
const success = (requestId: number, imageId: number, extra: Partial<ImageResult> = {}): ImageResult => ({
  imageId, url: `http://x/${imageId}.png`, status: 'SUCCESS', location: `/v1/dumps/${requestId}/images/${imageId}`, contentType: 'image/png', bytes: 10 * imageId, sha256: digest(requestId, imageId), ...extra
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the url_validators repository`, async (t) => {
    const { db } = await migratedTestDatabase(t, engine)
    const dumpImages = createDumpImages(db, engine)
    const validators = createUrlValidators(db, engine)
    const userOf = async (username: string): Promise<number> => Number((await db.insertInto('users').values({ username, plan: 'gold' }).executeTakeFirstOrThrow()).insertId)
    const alice = await userOf('alice')
    const bob = await userOf('bob')
    const admit = async (userid: number): Promise<number> => Number((await db.insertInto('requests').values({ userid, dataformat: 'json', data: Buffer.from('{}') }).executeTakeFirstOrThrow()).insertId)
    const entry = (url: string, requestId: number, imageId: number, etag?: string, lastModified?: string): ValidatorsEntry => ({
      url, requestId, imageId, validators: { ...(etag === undefined ? {} : { etag }), ...(lastModified === undefined ? {} : { lastModified }) }
    })
    const keyOf = (userid: number, requestId: number, imageId: number): string => `${userid}/${requestId}/${imageId}.png`
    /** Records outcomes as a dump does: each success with the object written for it. */
    const record = async (userid: number, requestId: number, results: ImageResult[]): Promise<void> => {
      const keys = new Map(results.filter((r) => r.status === 'SUCCESS').map((r) => [r.imageId, keyOf(userid, requestId, r.imageId)]))
      await dumpImages.record(requestId, 0, results, undefined, { keys, redundant: [], gone: [] })
    }

    t.test("a URL's validators come back with the recorded outcome they describe", async (t) => {
      const id = await admit(alice)
      await record(alice, id, [success(id, 1, { width: 4, height: 3 }), success(id, 2)])
      const long = `http://x/${'y'.repeat(5000)}.png`
      await validators.remember(alice, [entry('http://x/1.png', id, 1, '"one"', DATE), entry(long, id, 2, undefined, DATE)])
      const found = await validators.lookup(alice, ['http://x/1.png', long, 'http://x/never.png'])
      t.same(found.get('http://x/1.png'), { validators: { etag: '"one"', lastModified: DATE }, objectKey: keyOf(alice, id, 1), contentType: 'image/png', bytes: 10, sha256: digest(id, 1), width: 4, height: 3 })
      t.same(found.get(long)?.validators, { lastModified: DATE }, 'a URL of any length, keyed by its digest')
      t.equal(found.size, 2, 'a URL never stored has nothing')
      t.equal((await validators.lookup(bob, ['http://x/1.png'])).size, 0, "another user's are not theirs")
    })

    t.test('the newest download of a URL replaces what was kept', async (t) => {
      const first = await admit(alice)
      const second = await admit(alice)
      await record(alice, first, [success(first, 1)])
      await record(alice, second, [success(second, 7, { bytes: 77 })])
      await validators.remember(alice, [entry('http://x/replaced.png', first, 1, '"a"')])
      await validators.remember(alice, [entry('http://x/replaced.png', second, 7, '"b"')])
      t.match((await validators.lookup(alice, ['http://x/replaced.png'])).get('http://x/replaced.png'), { validators: { etag: '"b"' }, objectKey: keyOf(alice, second, 7), bytes: 77 })
    })

    t.test('nothing is offered without validators, a recorded success, or a record at all', async (t) => {
      const id = await admit(alice)
      await record(alice, id, [success(id, 1), { imageId: 2, url: 'http://x/2.png', status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } }, success(id, 3)])
      await validators.remember(alice, [
        entry('http://x/none.png', id, 1),
        entry('http://x/failed.png', id, 2, '"f"'),
        entry('http://x/pending.png', id, 9, '"p"'),
        entry('http://x/removed.png', id, 3, '"r"')
      ])
      await dumpImages.removeOf(id)
      t.equal((await validators.lookup(alice, ['http://x/none.png', 'http://x/failed.png', 'http://x/pending.png', 'http://x/removed.png'])).size, 0)
    })

    t.test('a success recorded without its object (from before objects were shared) is not offered', async (t) => {
      const id = await admit(alice)
      await dumpImages.record(id, 0, [success(id, 1)])
      await validators.remember(alice, [entry('http://x/unkeyed.png', id, 1, '"u"')])
      t.equal((await validators.lookup(alice, ['http://x/unkeyed.png'])).size, 0)
    })

    t.test('nothing is offered once the user no longer has the object that holds the bytes', async (t) => {
      const id = await admit(alice)
      await record(alice, id, [success(id, 1), success(id, 2)])
      await validators.remember(alice, [entry('http://x/forgotten.png', id, 1, '"f"'), entry('http://x/kept.png', id, 2, '"k"')])
      // as a removal forgets an object (plugins/dumps/removal.ts), here without its outcomes
      await createStoredObjects(engine).forget(db, alice, [digest(id, 1)])
      const found = await validators.lookup(alice, ['http://x/forgotten.png', 'http://x/kept.png'])
      t.same([...found.keys()], ['http://x/kept.png'], 'only the URL whose object is still there')
    })

    t.test('the object offered is the one the user keeps for those bytes, even when another dump stored them first', async (t) => {
      const earlier = await admit(alice)
      const later = await admit(alice)
      await record(alice, earlier, [success(earlier, 1)])
      await record(alice, later, [success(later, 3, { sha256: digest(earlier, 1) })])
      await validators.remember(alice, [entry('http://x/same-bytes.png', later, 3, '"s"')])
      t.equal((await validators.lookup(alice, ['http://x/same-bytes.png'])).get('http://x/same-bytes.png')?.objectKey, keyOf(alice, earlier, 1))
    })

    t.test("an outcome of another user's dump is never offered, whatever the row names", async (t) => {
      const bobs = await admit(bob)
      await record(bob, bobs, [success(bobs, 1)])
      await validators.remember(alice, [entry('http://x/theirs.png', bobs, 1, '"t"')])
      t.equal((await validators.lookup(alice, ['http://x/theirs.png'])).size, 0)
    })

    t.test('a dump of more URLs than one statement takes is looked up and kept in slices', async (t) => {
      const id = await admit(alice)
      const ids = Array.from({ length: 1200 }, (_, i) => i + 1)
      for (let i = 0; i < ids.length; i += 400) await record(alice, id, ids.slice(i, i + 400).map((n) => success(id, n)))
      await validators.remember(alice, ids.map((n) => entry(`http://x/many/${n}.png`, id, n, `"${n}"`)))
      const found = await validators.lookup(alice, ids.map((n) => `http://x/many/${n}.png`))
      t.equal(found.size, 1200)
      t.equal(found.get('http://x/many/1200.png')?.validators.etag, '"1200"')
    })
  })
}
