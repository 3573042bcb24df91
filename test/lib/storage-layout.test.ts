import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createFileStore } from '../../lib/object-store/file-store.js'
import { dumpPrefix, dumpTarget, findUnrecordedKey, imageIdOfKey, objectKey } from '../../lib/storage-layout.js'

async function put (store: ReturnType<typeof createFileStore>, ...keys: string[]): Promise<void> {
  for (const key of keys) {
    const sink = await store.create(key, { contentType: 'application/octet-stream' })
    await sink.write([Buffer.from('x')], 1)
    await sink.commit()
  }
}

t.test('an image of a dump: <userid>/<requestId>/<imageId>.<ext>', async (t) => {
  const target = dumpTarget(3, 42, 7)
  t.same(target, { dir: '3/42', name: '7' })
  t.equal(objectKey(target, 'png'), '3/42/7.png')
  t.equal(objectKey({ dir: '', name: '1' }, 'gif'), '1.gif', 'no leading slash at the top')
  t.equal(dumpPrefix(3, 42), '3/42/')
  for (const [userid, requestId] of [[-1, 42], [3, 1.5], [3, NaN]]) t.equal(dumpPrefix(userid!, requestId!), null, `ids ${userid}/${requestId} name no folder`)
  t.equal(imageIdOfKey('3/42/12.png'), 12)
  t.equal(imageIdOfKey('3/42/12.png.part'), 12)
})

t.test('findUnrecordedKey probes the names an image of a dump could have, whatever its type', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'storage-layout-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const store = createFileStore(dir)
  await put(store, '3/42/1.jpg', '3/42/2.avif', '3/42/4.txt', '3/43/5.png')
  // an image still being written: a temporary piece only
  const sink = await store.create('3/42/3.png', { contentType: 'image/png' })
  t.teardown(() => sink.abort())
  t.same(await findUnrecordedKey(store, 3, 42, 1), { key: '3/42/1.jpg', contentType: 'image/jpeg' })
  t.same(await findUnrecordedKey(store, 3, 42, 2), { key: '3/42/2.avif', contentType: 'image/avif' })
  t.equal(await findUnrecordedKey(store, 3, 42, 3), undefined, 'an image still being written is not there yet')
  t.equal(await findUnrecordedKey(store, 3, 42, 4), undefined, 'a name with no image extension is not an image')
  t.equal(await findUnrecordedKey(store, 3, 42, 5), undefined, "another dump's image is not this dump's")
  t.equal(await findUnrecordedKey(store, 4, 42, 1), undefined, "another user's folder is another folder")
  for (const [userid, requestId, imageId] of [[-1, 42, 1], [3, 1.5, 1], [3, 42, NaN], [3, 42, -1]]) {
    t.equal(await findUnrecordedKey(store, userid!, requestId!, imageId!), undefined, `ids ${userid}/${requestId}/${imageId} name no object`)
  }
})
