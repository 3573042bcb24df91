import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buffer } from 'node:stream/consumers'
import t, { type Test } from 'tap'
import { UnsafeObjectKeyError } from '../../../lib/object-store/contract.js'
import { createFileStore, type FileStore } from '../../../lib/object-store/file-store.js'
import { filesUnder } from '../../helpers/dumps.js'

/** A store in a fresh folder inside a parent folder (to see that nothing lands outside). */
async function fileStore (t: Test): Promise<{ store: FileStore, parent: string, root: string }> {
  const parent = await mkdtemp(join(tmpdir(), 'file-store-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const root = join(parent, 'objects')
  await mkdir(root)
  const store = createFileStore(root)
  t.teardown(() => store.close())
  return { store, parent, root }
}

async function put (store: FileStore, key: string, bytes: Buffer): Promise<void> {
  const sink = await store.create(key, { contentType: 'image/png' })
  await sink.write([bytes.subarray(0, 3), bytes.subarray(3)], bytes.length)
  await sink.commit()
}

async function listed (store: FileStore, prefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const key of store.list(prefix)) keys.push(key)
  return keys.sort()
}

const bytes = Buffer.from('0123456789abcdef')

/** Asserts that `promise` rejects with an UnsafeObjectKeyError. */
async function refusedAsUnsafe (t: Test, promise: Promise<unknown>, what: string): Promise<void> {
  const error = await promise.then(() => undefined, (error: unknown) => error)
  t.type(error, UnsafeObjectKeyError, what)
}

t.test('an object is visible only once committed, whole', async (t) => {
  const { store, root } = await fileStore(t)
  t.equal(store.kind, 'file')
  const sink = await store.create('1/42/7.png', { contentType: 'image/png' })
  await sink.write([bytes.subarray(0, 10)], 10)
  t.equal(await store.stat('1/42/7.png'), undefined, 'not stated while written')
  t.equal(await store.read('1/42/7.png'), undefined, 'not read while written')
  t.same(await listed(store, ''), [], 'not listed while written')
  t.same(await filesUnder(root), ['1/42/7.png.part'], 'the bytes so far are a temporary file')
  await sink.write([bytes.subarray(10)], 6)
  await sink.commit()
  const info = await store.stat('1/42/7.png')
  t.equal(info?.bytes, 16)
  t.type(info?.lastModified, Date)
  const read = await store.read('1/42/7.png')
  t.same(await buffer(read!.body), bytes, 'the whole object')
  t.same(await listed(store, '1/'), ['1/42/7.png'])
  t.same(await filesUnder(root), ['1/42/7.png'], 'no temporary file once committed')
})

t.test('abort leaves nothing, at any point, and may be called again', async (t) => {
  const { store, root } = await fileStore(t)
  const early = await store.create('1/1.png', { contentType: 'image/png' })
  await early.abort()
  const late = await store.create('1/2.png', { contentType: 'image/png' })
  await late.write([bytes], bytes.length)
  await late.abort()
  await late.abort()
  t.same(await filesUnder(root), [], 'no object, no temporary file')
  await t.rejects(late.write([bytes], bytes.length), 'an aborted sink takes no more bytes')
  await t.rejects(late.commit(), 'nor commits')
  t.equal(await store.stat('1/2.png'), undefined)
})

t.test('an aborted signal keeps an object from being committed', async (t) => {
  const { store, root } = await fileStore(t)
  const controller = new AbortController()
  const sink = await store.create('1/1.png', { contentType: 'image/png', signal: controller.signal })
  await sink.write([bytes], bytes.length)
  controller.abort(new Error('stopped'))
  await t.rejects(sink.commit(), { message: 'stopped' })
  t.same(await filesUnder(root), [], 'nothing left')
  await t.rejects(store.create('1/2.png', { contentType: 'image/png', signal: controller.signal }), { message: 'stopped' }, 'nor is one created after')
})

t.test('committing replaces an object atomically', async (t) => {
  const { store } = await fileStore(t)
  await put(store, '1/1.png', bytes)
  const sink = await store.create('1/1.png', { contentType: 'image/png' })
  await sink.write([Buffer.from('new')], 3)
  t.same(await buffer((await store.read('1/1.png'))!.body), bytes, 'the old object until the new one is complete')
  await sink.commit()
  t.same(await buffer((await store.read('1/1.png'))!.body), Buffer.from('new'))
})

t.test('unsafe keys are refused before anything is touched', async (t) => {
  const { store, parent, root } = await fileStore(t)
  await put(store, '1/1.png', bytes)
  const refused = ['', '../x', '..', '1/../../x', '/tmp/x', '1//2', '1/./2', '1/2/', 'a\\b', 'a\0b', 'ü.png', '1/1.png.part', 'x'.repeat(1025), 1, null]
  for (const key of refused) {
    const what = JSON.stringify(key)
    await refusedAsUnsafe(t, store.create(key as string, { contentType: 'image/png' }), `create ${what}`)
    await refusedAsUnsafe(t, store.stat(key as string), `stat ${what}`)
    await refusedAsUnsafe(t, store.read(key as string), `read ${what}`)
    await refusedAsUnsafe(t, store.remove(['1/1.png', key as string]), `remove ${what}`)
  }
  for (const prefix of ['../', '..', '/', '1/../']) {
    await refusedAsUnsafe(t, listed(store, prefix), `list ${prefix}`)
    await refusedAsUnsafe(t, store.sweepTemporary(prefix), `sweepTemporary ${prefix}`)
  }
  t.same(await filesUnder(parent), ['objects/1/1.png'], 'nothing written or removed, inside or outside the store (a refused remove removes none of its keys)')
  t.ok(root)
})

t.test('read gives a byte range; stat and read answer undefined for no object', async (t) => {
  const { store } = await fileStore(t)
  await put(store, '1/1.png', bytes)
  const part = await store.read('1/1.png', { start: 2, end: 5 })
  t.equal(part?.bytes, 16, 'the size is the whole object\'s')
  t.same(await buffer(part!.body), Buffer.from('2345'), 'both ends included')
  t.same(await buffer((await store.read('1/1.png', { start: 15, end: 15 }))!.body), Buffer.from('f'), 'the last byte')
  await t.rejects(store.read('1/1.png', { start: 10, end: 16 }), RangeError, 'a range past the end is refused')
  await t.rejects(store.read('1/1.png', { start: 5, end: 4 }), RangeError, 'and one backwards')
  t.equal(await store.stat('1/2.png'), undefined)
  t.equal(await store.read('1/2.png'), undefined)
  t.equal(await store.stat('1'), undefined, 'a folder is no object')
  t.equal(await store.read('1'), undefined)
  t.equal(await store.stat('1/1.png/x'), undefined, 'nor a path through an object')
})

t.test('list, remove and sweepTemporary work on prefixes; a missing object is no error', async (t) => {
  const { store, root } = await fileStore(t)
  for (const key of ['3/42/1.png', '3/42/2.jpg', '3/43/1.png', '3/4/1.png', '4/42/1.png']) await put(store, key, bytes)
  // a stopped run's temporary files
  await writeFile(join(root, '3', '42', '3.png.part'), 'half')
  await writeFile(join(root, '3', '43', '5.png.part'), 'half')
  t.same(await listed(store, '3/42/'), ['3/42/1.png', '3/42/2.jpg'], 'one folder, no temporary file')
  t.same(await listed(store, '3/4'), ['3/4/1.png', '3/42/1.png', '3/42/2.jpg', '3/43/1.png'], 'a prefix need not end in /')
  t.same(await listed(store, '9/'), [], 'no folder, nothing')
  await store.sweepTemporary('3/42/')
  t.same((await filesUnder(root)).filter((f) => f.endsWith('.part')), ['3/43/5.png.part'], 'only the temporary files under the prefix went')
  await store.remove(['3/42/1.png', '3/42/1.png', '3/42/9.png'])
  t.same(await listed(store, '3/42/'), ['3/42/2.jpg'])
  await store.remove(['3/42/2.jpg'])
  t.notOk((await readdir(join(root, '3'))).includes('42'), 'a folder left empty goes too')
  await put(store, '3/42/7.png', bytes)
  t.same(await listed(store, '3/42/'), ['3/42/7.png'], 'and is made again when needed')
  await store.sweepTemporary('')
  t.same((await filesUnder(root)).filter((f) => f.endsWith('.part')), [], 'everywhere')
})

t.test('a folder removed behind the store\'s back is made again', async (t) => {
  const { store, root } = await fileStore(t)
  await put(store, '1/42/1.png', bytes)
  await rm(join(root, '1'), { recursive: true })
  await put(store, '1/42/2.png', bytes)
  t.same(await filesUnder(root), ['1/42/2.png'])
})

t.test('a store needs a folder', async (t) => {
  t.throws(() => createFileStore(''), TypeError)
})
