import t from 'tap'
import type { ObjectStore } from '../../../lib/object-store/contract.js'
import { createObjectStore } from '../../../lib/object-store/create-store.js'
import { StorageUrlError, parseStorageUrl } from '../../../lib/object-store/storage-url.js'
import { startS3Server } from '../../helpers/s3-server.js'
import { keysOf, put } from './contract-spec.js'

t.test('file: URLs and plain paths name a folder', async (t) => {
  t.same(parseStorageUrl('file:./data/images'), { kind: 'file', dir: './data/images' })
  t.same(parseStorageUrl('file:/srv/images'), { kind: 'file', dir: '/srv/images' })
  t.same(parseStorageUrl('file:///srv/my%20images'), { kind: 'file', dir: '/srv/my images' }, 'a file URL is decoded')
  t.same(parseStorageUrl('/srv/images'), { kind: 'file', dir: '/srv/images' }, 'a plain path')
  t.same(parseStorageUrl('data/images'), { kind: 'file', dir: 'data/images' })
})

t.test('s3:// URLs name a bucket, a prefix, an endpoint and a region', async (t) => {
  t.same(parseStorageUrl('s3://images'), { kind: 's3', bucket: 'images', prefix: '' })
  t.same(parseStorageUrl('s3://images/'), { kind: 's3', bucket: 'images', prefix: '' })
  t.same(parseStorageUrl('s3://my.images-1/prod/dump/'), { kind: 's3', bucket: 'my.images-1', prefix: 'prod/dump' }, 'the trailing / is dropped')
  t.same(parseStorageUrl('s3://images/p?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1'),
    { kind: 's3', bucket: 'images', prefix: 'p', endpoint: 'http://127.0.0.1:9000', region: 'eu-west-1' })
  t.same(parseStorageUrl('s3://images/p?endpoint=https://minio.example:9000&region=us-east-1'),
    { kind: 's3', bucket: 'images', prefix: 'p', endpoint: 'https://minio.example:9000', region: 'us-east-1' }, 'an endpoint need not be percent-encoded')
  t.same(parseStorageUrl('s3://images/p?region=default'), { kind: 's3', bucket: 'images', prefix: 'p', region: 'default' }, "Ceph's region name")
})

t.test('a URL that cannot be used is refused, naming the problem', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['http://images/p', /scheme "http:" is not supported/],
    ['gs://images/p', /scheme "gs:" is not supported/],
    ['file:', /names no directory/],
    ['file://host/srv', /file URL/],
    ['s3:images', /expected s3:\/\//],
    ['s3:///p', /names no bucket/],
    ['s3://Images/p', /not a valid bucket name/],
    ['s3://ab/p', /not a valid bucket name/],
    ['s3://images_1/p', /not a valid bucket name/],
    ['s3://key:secret@images/p', /credentials do not go in the URL: set AWS_ACCESS_KEY_ID/],
    ['s3://images:9000/p', /endpoint=http:\/\/host:port/],
    ['s3://images/../p', /prefix/],
    ['s3://images/a//b', /the prefix "a\/\/b" must be/],
    ['s3://images/a b', /the prefix "a b" must be/],
    ['s3://images/p#x', /fragment/],
    ['s3://images/p?endpoint=ftp://x', /not http\(s\):\/\/host/],
    ['s3://images/p?endpoint=minio:9000', /not http\(s\)/],
    ['s3://images/p?endpoint=not a url', /is not a URL/],
    ['s3://images/p?endpoint=http://u:p@minio:9000', /credentials do not go in the endpoint/],
    ['s3://images/p?region=eu west', /not a region name/],
    ['s3://images/p?bucket=x', /unknown parameter "bucket": expected endpoint or region/],
    ['s3://images/p?region=a&region=b', /"region" is given twice/]
  ]
  for (const [url, message] of cases) {
    t.throws(() => parseStorageUrl(url), { name: 'StorageUrlError', message }, JSON.stringify(url))
  }
  t.type((() => { try { parseStorageUrl('gs://x') } catch (err) { return err } })(), StorageUrlError)
})

t.test('createObjectStore builds the backend the URL names', async (t) => {
  const made: string[] = []
  const fileStore = { kind: 'file' } as unknown as ObjectStore
  const createFileStore = (dir: string): ObjectStore => { made.push(dir); return fileStore }
  t.equal(await createObjectStore('file:/srv/images', { createFileStore }), fileStore)
  t.equal(await createObjectStore({ kind: 'file', dir: 'data' }, { createFileStore }), fileStore, 'also from a parsed location')
  t.same(made, ['/srv/images', 'data'])
  await t.rejects(createObjectStore('gs://x', { createFileStore }), { name: 'StorageUrlError' })

  const s3 = await startS3Server()
  t.teardown(() => s3.close())
  const store = await createObjectStore(s3.url('prod'), { createFileStore, s3: { credentials: s3.credentials } })
  t.teardown(() => store.close())
  t.equal(store.kind, 's3')
  await put(store, '1/2/3.png', Buffer.from('png'))
  t.same(await keysOf(store, ''), ['1/2/3.png'], 'the store works')
  await s3.settled()
  t.ok(s3.requests.some((r) => r.method === 'PUT' && r.path === `/${s3.bucket}/prod/1/2/3.png`), 'in the bucket, under the prefix, path-style')
})
