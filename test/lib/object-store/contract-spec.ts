/**
 * The ObjectStore contract (lib/object-store/contract.ts) as a specification every backend
 * runs: `objectStoreContract(t, makeStore)` adds one subtest per rule. `makeStore` gives a
 * fresh, empty store for each subtest (its own folder, or its own prefix in a bucket) and
 * registers its own cleanup on that subtest.
 *
 * ```ts
 * objectStoreContract(t, async (t) => createFileStore(await tempDir(t)))
 * ```
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { Test } from 'tap'
import { UnsafeObjectKeyError, type ObjectStore } from '../../../lib/object-store/contract.js'

export type MakeStore = (t: Test) => Promise<ObjectStore>

export async function bytesOf (body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export async function keysOf (store: ObjectStore, prefix: string): Promise<string[]> {
  const keys: string[] = []
  for await (const key of store.list(prefix)) keys.push(key)
  return keys.sort()
}

export async function put (store: ObjectStore, key: string, bytes: Buffer, chunkSize = 64 * 1024): Promise<void> {
  const sink = await store.create(key, { contentType: 'image/png' })
  for (let at = 0; at < bytes.length; at += chunkSize) {
    const chunk = bytes.subarray(at, at + chunkSize)
    await sink.write([chunk], chunk.length)
  }
  await sink.commit()
}

/** What `promise` rejects with; undefined when it resolves. */
async function failureOf (promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(() => undefined, (err: unknown) => err)
}

const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

export function objectStoreContract (t: Test, makeStore: MakeStore): void {
  t.test('a committed object reads back whole, with its size and time, and is listed', async (t) => {
    const store = await makeStore(t)
    const bytes = randomBytes(100_000)
    const before = Date.now()
    const sink = await store.create('1/42/7.png', { contentType: 'image/png' })
    await sink.write([bytes.subarray(0, 1000), bytes.subarray(1000, 60_000)], 60_000)
    t.equal(await store.stat('1/42/7.png'), undefined, 'nothing is visible while it is written')
    t.equal(await store.read('1/42/7.png'), undefined, 'nor readable')
    t.same(await keysOf(store, ''), [], 'nor listed')
    await sink.write([bytes.subarray(60_000)], 40_000)
    await sink.commit()
    const info = await store.stat('1/42/7.png')
    t.equal(info?.bytes, 100_000, 'stat gives the size')
    // stores keep whole seconds
    t.ok(info !== undefined && info.lastModified.getTime() >= Math.floor(before / 1000) * 1000 - 1000, 'and a modification time of now')
    const read = await store.read('1/42/7.png')
    t.equal(read?.bytes, 100_000)
    t.equal(sha256(await bytesOf(read!.body)), sha256(bytes), 'read gives the very bytes written')
    t.same(await keysOf(store, '1/42/'), ['1/42/7.png'])
  })

  t.test('an empty object is an object', async (t) => {
    const store = await makeStore(t)
    const sink = await store.create('1/1/empty.png', { contentType: 'image/png' })
    await sink.commit()
    t.equal((await store.stat('1/1/empty.png'))?.bytes, 0)
    t.equal((await bytesOf((await store.read('1/1/empty.png'))!.body)).length, 0)
  })

  t.test('a missing object: stat and read give undefined', async (t) => {
    const store = await makeStore(t)
    t.equal(await store.stat('1/2/3.png'), undefined)
    t.equal(await store.read('1/2/3.png'), undefined)
    t.equal(await store.read('1/2/3.png', { start: 0, end: 0 }), undefined)
  })

  t.test('a range reads those bytes; bytes is still the whole size; a range outside is a RangeError', async (t) => {
    const store = await makeStore(t)
    const bytes = randomBytes(10_000)
    await put(store, '5/6/7.png', bytes)
    for (const [start, end] of [[0, 0], [0, 9999], [100, 199], [9999, 9999]] as const) {
      const read = await store.read('5/6/7.png', { start, end })
      t.equal(read?.bytes, 10_000, `${start}-${end}: bytes is the object's size`)
      t.same(await bytesOf(read!.body), bytes.subarray(start, end + 1), `${start}-${end}: the body is that range`)
    }
    await t.rejects(store.read('5/6/7.png', { start: 9000, end: 10_000 }), RangeError, 'an end past the last byte')
    await t.rejects(store.read('5/6/7.png', { start: 10_000, end: 10_001 }), RangeError, 'a start past the last byte')
    await t.rejects(store.read('5/6/7.png', { start: 5, end: 4 }), RangeError, 'a start after the end')
  })

  t.test('list gives every complete key under a prefix, and only those', async (t) => {
    const store = await makeStore(t)
    for (const key of ['1/42/1.png', '1/42/2.jpg', '1/420/1.png', '1/4/1.png', '2/42/1.png', '1/42/sub/3.png']) await put(store, key, randomBytes(10))
    const open = await store.create('1/42/9.png', { contentType: 'image/png' })
    await open.write([randomBytes(10)], 10)
    t.teardown(() => open.abort())
    t.same(await keysOf(store, '1/42/'), ['1/42/1.png', '1/42/2.jpg', '1/42/sub/3.png'], 'a folder, with what is below it, without an object still being written')
    t.same(await keysOf(store, '1/42'), ['1/42/1.png', '1/42/2.jpg', '1/42/sub/3.png', '1/420/1.png'], 'a prefix is a prefix of the key, not a folder')
    t.same(await keysOf(store, '1/'), ['1/4/1.png', '1/42/1.png', '1/42/2.jpg', '1/42/sub/3.png', '1/420/1.png'])
    t.same(await keysOf(store, ''), ['1/4/1.png', '1/42/1.png', '1/42/2.jpg', '1/42/sub/3.png', '1/420/1.png', '2/42/1.png'], "'' lists everything")
    t.same(await keysOf(store, '3/'), [], 'a prefix with nothing under it')
  })

  t.test('remove takes the objects away; a missing one is no error', async (t) => {
    const store = await makeStore(t)
    await put(store, '1/1/1.png', randomBytes(10))
    await put(store, '1/1/2.png', randomBytes(10))
    await store.remove(['1/1/1.png', '1/1/404.png', '1/1/1.png'])
    t.equal(await store.stat('1/1/1.png'), undefined)
    t.same(await keysOf(store, ''), ['1/1/2.png'], 'the other object stays')
    await store.remove([])
  })

  t.test('abort before commit leaves nothing; the sink is then closed', async (t) => {
    const store = await makeStore(t)
    const sink = await store.create('1/1/1.png', { contentType: 'image/png' })
    await sink.write([randomBytes(1000)], 1000)
    await sink.abort()
    await sink.abort()
    t.equal(await store.stat('1/1/1.png'), undefined, 'nothing visible')
    t.same(await keysOf(store, ''), [], 'nothing listed')
    await t.rejects(sink.write([randomBytes(10)], 10), 'a write after abort is refused')
    await t.rejects(sink.commit(), 'and so is a commit')
    t.equal(await store.stat('1/1/1.png'), undefined)
  })

  t.test('an aborted signal aborts the sink: commit is refused and nothing is visible', async (t) => {
    const store = await makeStore(t)
    const controller = new AbortController()
    const sink = await store.create('1/1/1.png', { contentType: 'image/png', signal: controller.signal })
    await sink.write([randomBytes(1000)], 1000)
    controller.abort(new Error('the download was cancelled'))
    await t.rejects(sink.commit())
    await sink.abort()
    t.equal(await store.stat('1/1/1.png'), undefined)
    t.same(await keysOf(store, ''), [])
    await t.rejects(store.create('1/1/2.png', { contentType: 'image/png', signal: controller.signal }), 'a sink for an aborted signal is not made')
  })

  t.test('a committed object stays when abort is called after all', async (t) => {
    const store = await makeStore(t)
    const sink = await store.create('1/1/1.png', { contentType: 'image/png' })
    await sink.write([randomBytes(10)], 10)
    await sink.commit()
    await sink.abort()
    t.equal((await store.stat('1/1/1.png'))?.bytes, 10)
  })

  t.test('an unsafe key is refused before anything is touched', async (t) => {
    const store = await makeStore(t)
    await put(store, '1/1/1.png', randomBytes(10))
    const unsafe = ['', '/1/1.png', '1//1.png', '1/1/', '../1.png', '1/../1.png', './1.png', '1/./1.png', '1/1 1.png', '1\\1.png', '1/1.png?x', 'ü.png', '1/\0.png', 'x'.repeat(1025)]
    for (const key of unsafe) {
      const shown = JSON.stringify(key.slice(0, 20))
      t.type(await failureOf(store.create(key, { contentType: 'image/png' })), UnsafeObjectKeyError, `create ${shown}`)
      t.type(await failureOf(store.put(key, [Buffer.from('x')], 1, { contentType: 'image/png' })), UnsafeObjectKeyError, `put ${shown}`)
      t.type(await failureOf(store.stat(key)), UnsafeObjectKeyError, `stat ${shown}`)
      t.type(await failureOf(store.read(key)), UnsafeObjectKeyError, `read ${shown}`)
    }
    t.same(await keysOf(store, ''), ['1/1/1.png'], 'nothing was written for an unsafe key')
    t.type(await failureOf(store.remove(['1/1/1.png', '../1/1/1.png'])), UnsafeObjectKeyError, 'remove with one unsafe key among safe ones')
    t.equal((await store.stat('1/1/1.png'))?.bytes, 10, '...removed nothing')
    for (const prefix of ['/', '../', '1/../', '..', '1/..', '/1/', '1//']) {
      t.type(await failureOf(keysOf(store, prefix)), UnsafeObjectKeyError, `list ${JSON.stringify(prefix)}`)
      t.type(await failureOf(store.sweepTemporary(prefix)), UnsafeObjectKeyError, `sweepTemporary ${JSON.stringify(prefix)}`)
    }
  })

  t.test('put stores a whole object at once: read back whole, listed, replacing none of its neighbours', async (t) => {
    const store = await makeStore(t)
    const bytes = randomBytes(50_000)
    await put(store, '1/42/6.png', randomBytes(10))
    await store.put('1/42/7.png', [bytes.subarray(0, 10), bytes.subarray(10, 20_000), bytes.subarray(20_000)], bytes.length, { contentType: 'image/png' })
    t.equal((await store.stat('1/42/7.png'))?.bytes, 50_000, 'stat gives the size')
    t.same(await bytesOf((await store.read('1/42/7.png'))!.body), bytes, 'the same bytes, in order')
    t.same(await keysOf(store, '1/'), ['1/42/6.png', '1/42/7.png'], 'listed beside the object already there')
    // many at once, as a dump's images end together
    const many = Array.from({ length: 50 }, (_, i) => randomBytes(100 + i))
    await Promise.all(many.map((b, i) => store.put(`2/1/${i}.png`, [b], b.length, { contentType: 'image/png' })))
    const back = await Promise.all(many.map(async (_, i) => await bytesOf((await store.read(`2/1/${i}.png`))!.body)))
    t.ok(back.every((b, i) => b.equals(many[i]!)), 'fifty put together each read back as written')
    await store.put('3/1/empty.png', [], 0, { contentType: 'image/png' })
    t.equal((await store.stat('3/1/empty.png'))?.bytes, 0, 'an empty object is an object')
  })

  t.test('put with an aborted signal stores nothing', async (t) => {
    const store = await makeStore(t)
    const controller = new AbortController()
    controller.abort(new Error('the download was cancelled'))
    await t.rejects(store.put('1/1/1.png', [randomBytes(10)], 10, { contentType: 'image/png', signal: controller.signal }))
    t.equal(await store.stat('1/1/1.png'), undefined)
    t.same(await keysOf(store, ''), [])
  })

  t.test('a large object streams through in pieces and reads back whole', async (t) => {
    const store = await makeStore(t)
    const bytes = randomBytes(12 * 1024 * 1024)
    await put(store, '9/9/large.png', bytes)
    t.equal((await store.stat('9/9/large.png'))?.bytes, bytes.length)
    t.equal(sha256(await bytesOf((await store.read('9/9/large.png'))!.body)), sha256(bytes), 'the same bytes')
    const middle = await store.read('9/9/large.png', { start: 5 * 1024 * 1024 - 10, end: 5 * 1024 * 1024 + 9 })
    t.same(await bytesOf(middle!.body), bytes.subarray(5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10), 'a range across a part boundary')
  })

  t.test('sweepTemporary leaves complete objects alone', async (t) => {
    const store = await makeStore(t)
    await put(store, '1/1/1.png', randomBytes(10))
    await store.sweepTemporary('1/')
    await store.sweepTemporary('')
    t.same(await keysOf(store, ''), ['1/1/1.png'])
  })
}
