/**
 * A local S3-protocol server for tests: s3rver (an npm devDependency) on 127.0.0.1, a free
 * port and a temporary folder, with one bucket made. It is a stand-in for a real store
 * (AWS S3, MinIO, Ceph RGW), good enough to run the S3 backend's real requests against,
 * not a proof of any one store's behaviour. What it lacks, found by trying, is in
 * `supports`: tests that need it skip that assertion and say why.
 *
 * It records every request it answers (`requests`, and a 'request' event once the answer
 * is sent), so a test can wait for "part 1 has been stored" instead of sleeping, and see
 * what went over the wire (one PutObject, or parts and a completion).
 *
 * ```ts
 * const s3 = await startS3Server()
 * t.teardown(() => s3.close())
 * const store = createS3Store({ ...s3.storeOptions, prefix: 'images' })
 * ```
 */
import { EventEmitter } from 'node:events'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import S3rver from 's3rver'
import type { S3StoreOptions } from '../../lib/object-store/s3-store.js'

export interface S3Request {
  method: string
  /** the path, bucket first, e.g. /images/p/1/42/7.png */
  path: string
  query: URLSearchParams
  headers: IncomingHttpHeaders
  /** the answer's status */
  status: number
  /** the request's Content-Length (0 without one) */
  contentLength: number
}

export interface S3TestServer {
  /** http://127.0.0.1:<port> */
  endpoint: string
  bucket: string
  region: string
  /** s3rver's fixed credentials (it checks signatures) */
  credentials: { accessKeyId: string, secretAccessKey: string }
  /** what createS3Store needs to reach the bucket */
  storeOptions: Pick<S3StoreOptions, 'bucket' | 'endpoint' | 'region' | 'credentials'>
  /** a STORAGE_URL for the bucket under `prefix` */
  url (prefix?: string): string
  /** the AWS_* variables a child process needs for the SDK's default credential chain */
  env: Record<string, string>
  /** every request answered, in order */
  requests: S3Request[]
  /** emits 'request' (S3Request) once each answer is sent */
  events: EventEmitter
  /** operations s3rver does not implement, as found at start */
  supports: { listMultipartUploads: boolean, abortMultipartUpload: boolean }
  /** multipart uploads started and neither completed nor aborted, read from s3rver's folder */
  unfinishedUploads (): Promise<Array<{ key: string, uploadId: string, parts: number }>>
  close (): Promise<void>
}

const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }
const REGION = 'us-east-1'

export async function startS3Server (options: { bucket?: string } = {}): Promise<S3TestServer> {
  const bucket = options.bucket ?? 'images'
  const directory = await mkdtemp(join(tmpdir(), 'image-dump-s3-'))
  const s3rver = new S3rver({ directory, silent: true, configureBuckets: [{ name: bucket, configs: [] }] })
  await s3rver.configureBuckets()
  const handle = s3rver.callback()
  const requests: S3Request[] = []
  const events = new EventEmitter()
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://s3')
    res.on('finish', () => {
      const request: S3Request = { method: req.method ?? '', path: url.pathname, query: url.searchParams, headers: req.headers, status: res.statusCode, contentLength: Number(req.headers['content-length'] ?? 0) }
      requests.push(request)
      events.emit('request', request)
    })
    handle(req, res)
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  const uploadsDir = join(directory, bucket, '._S3rver_uploads')
  async function unfinishedUploads (): Promise<Array<{ key: string, uploadId: string, parts: number }>> {
    let ids: string[]
    try {
      ids = await readdir(uploadsDir)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
    return await Promise.all(ids.map(async (uploadId) => {
      const files = await readdir(join(uploadsDir, uploadId))
      const key = await readFile(join(uploadsDir, uploadId, 'key'), 'utf8')
      // a part is complete once s3rver has written its .md5 beside it
      return { key, uploadId, parts: files.filter((f) => /^\d+\.md5$/.test(f)).length }
    }))
  }

  const s3: S3TestServer = {
    endpoint,
    bucket,
    region: REGION,
    credentials: CREDENTIALS,
    storeOptions: { bucket, endpoint, region: REGION, credentials: CREDENTIALS },
    url: (prefix = '') => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&region=${REGION}`,
    env: { AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey, AWS_REGION: REGION },
    requests,
    events,
    supports: { listMultipartUploads: true, abortMultipartUpload: true },
    unfinishedUploads,
    async close () {
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(directory, { recursive: true, force: true })
    }
  }
  s3.supports = await probe(s3, uploadsDir)
  return s3
}

/** Asks the server for the two multipart operations s3rver 3.7 is known to lack. */
async function probe (s3: S3TestServer, uploadsDir: string): Promise<S3TestServer['supports']> {
  const { S3Client, CreateMultipartUploadCommand, AbortMultipartUploadCommand, ListMultipartUploadsCommand } = await import('@aws-sdk/client-s3')
  const client = new S3Client({ ...s3.storeOptions, forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' })
  const works = async (send: () => Promise<unknown>): Promise<boolean> => {
    try {
      await send()
      return true
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
      if (status === 501 || status === 405) return false
      throw err
    }
  }
  try {
    const Key = 'probe/multipart'
    const { UploadId } = await client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key }))
    const listMultipartUploads = await works(() => client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket })))
    const abortMultipartUpload = await works(() => client.send(new AbortMultipartUploadCommand({ Bucket: s3.bucket, Key, UploadId })))
    // what the server could not abort, the probe removes from its folder
    if (!abortMultipartUpload && UploadId !== undefined) await rm(join(uploadsDir, UploadId), { recursive: true, force: true })
    return { listMultipartUploads, abortMultipartUpload }
  } finally {
    client.destroy()
    // the probe's own requests are not the tests' business
    s3.requests.length = 0
  }
}
