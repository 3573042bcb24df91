import t from 'tap'
import { connect } from '../../db/connect.js'
import { migrateToLatest } from '../../db/migrate.js'
import { createDumpImages } from '../../db/dump-images.js'
import { createUrlValidators, type ValidatorsEntry } from '../../db/url-validators.js'
import type { ImageResult } from '../../schemas/dump.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'

const DATE = 'Tue, 01 Dec 2026 10:00:00 GMT'
const success = (imageId: number, extra: Partial<ImageResult> = {}): ImageResult => ({
  imageId, url: `http://x/${imageId}.png`, status: 'SUCCESS', location: `/v1/dumps/1/images/${imageId}`, contentType: 'image/png', bytes: 10 * imageId, sha256: 'ab'.repeat(32), ...extra
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the url_validators repository`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const { db } = connect(database.url)
    t.teardown(() => db.destroy())
    await migrateToLatest(db)
    const dumpImages = createDumpImages(db, engine)
    const validators = createUrlValidators(db, engine)
    const userOf = async (username: string): Promise<number> => Number((await db.insertInto('users').values({ username, plan: 'gold' }).executeTakeFirstOrThrow()).insertId)
    const alice = await userOf('alice')
    const bob = await userOf('bob')
    const admit = async (userid: number): Promise<number> => Number((await db.insertInto('requests').values({ userid, dataformat: 'json', data: Buffer.from('{}') }).executeTakeFirstOrThrow()).insertId)
    const entry = (url: string, requestId: number, imageId: number, etag?: string, lastModified?: string): ValidatorsEntry => ({
      url, requestId, imageId, objectKey: `1/${requestId}/${imageId}.png`, validators: { ...(etag === undefined ? {} : { etag }), ...(lastModified === undefined ? {} : { lastModified }) }
    })

    t.test("a URL's validators come back with the recorded outcome they describe", async (t) => {
      const id = await admit(alice)
      await dumpImages.record(id, 0, [success(1, { width: 4, height: 3 }), success(2)])
      const long = `http://x/${'y'.repeat(5000)}.png`
      await validators.remember(alice, [entry('http://x/1.png', id, 1, '"one"', DATE), entry(long, id, 2, undefined, DATE)])
      const found = await validators.lookup(alice, ['http://x/1.png', long, 'http://x/never.png'])
      t.same(found.get('http://x/1.png'), { validators: { etag: '"one"', lastModified: DATE }, objectKey: `1/${id}/1.png`, contentType: 'image/png', bytes: 10, sha256: 'ab'.repeat(32), width: 4, height: 3 })
      t.same(found.get(long)?.validators, { lastModified: DATE }, 'a URL of any length, keyed by its digest')
      t.equal(found.size, 2, 'a URL never stored has nothing')
      t.equal((await validators.lookup(bob, ['http://x/1.png'])).size, 0, "another user's are not theirs")
    })

    t.test('the newest download of a URL replaces what was kept', async (t) => {
      const first = await admit(alice)
      const second = await admit(alice)
      await dumpImages.record(first, 0, [success(1)])
      await dumpImages.record(second, 0, [success(7, { bytes: 77 })])
      await validators.remember(alice, [entry('http://x/replaced.png', first, 1, '"a"')])
      await validators.remember(alice, [entry('http://x/replaced.png', second, 7, '"b"')])
      t.match((await validators.lookup(alice, ['http://x/replaced.png'])).get('http://x/replaced.png'), { validators: { etag: '"b"' }, objectKey: `1/${second}/7.png`, bytes: 77 })
    })

    t.test('nothing is offered without validators, a recorded success, or a record at all', async (t) => {
      const id = await admit(alice)
      await dumpImages.record(id, 0, [success(1), { imageId: 2, url: 'http://x/2.png', status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } }, success(3)])
      await validators.remember(alice, [
        entry('http://x/none.png', id, 1),
        entry('http://x/failed.png', id, 2, '"f"'),
        entry('http://x/pending.png', id, 9, '"p"'),
        entry('http://x/removed.png', id, 3, '"r"')
      ])
      await dumpImages.removeOf(id)
      t.equal((await validators.lookup(alice, ['http://x/none.png', 'http://x/failed.png', 'http://x/pending.png', 'http://x/removed.png'])).size, 0)
    })

    t.test("an outcome of another user's dump is never offered, whatever the row names", async (t) => {
      const bobs = await admit(bob)
      await dumpImages.record(bobs, 0, [success(1)])
      await validators.remember(alice, [entry('http://x/theirs.png', bobs, 1, '"t"')])
      t.equal((await validators.lookup(alice, ['http://x/theirs.png'])).size, 0)
    })

    t.test('a dump of more URLs than one statement takes is looked up and kept in slices', async (t) => {
      const id = await admit(alice)
      const ids = Array.from({ length: 1200 }, (_, i) => i + 1)
      for (let i = 0; i < ids.length; i += 400) await dumpImages.record(id, 0, ids.slice(i, i + 400).map((n) => success(n)))
      await validators.remember(alice, ids.map((n) => entry(`http://x/many/${n}.png`, id, n, `"${n}"`)))
      const found = await validators.lookup(alice, ids.map((n) => `http://x/many/${n}.png`))
      t.equal(found.size, 1200)
      t.equal(found.get('http://x/many/1200.png')?.validators.etag, '"1200"')
    })
  })
}
