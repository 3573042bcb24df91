/**
 * A local S3-protocol server for tests: s3rver (an npm devDependency) in a process of its
 * own, on 127.0.0.1, a free port and a temporary folder, with one bucket made. It is a
 * stand-in for a real store (AWS S3, MinIO, Ceph RGW), good enough to run the S3 backend's
 * real requests against, not a proof of any one store's behaviour. What it lacks, found by
 * trying at start, is in `supports`; tests that need it skip that assertion and say why.
 *
 * It reports every request it answers (`requests`; a 'request' event), so a test can wait
 * for "part 1 has been stored" instead of sleeping, and see what went over the wire (one
 * PutObject, or parts and a completion). Reports arrive over IPC, a little after the answer:
 * `await s3.settled()` before reading `requests` after a call.
 *
 * ```ts
 * const s3 = await startS3Server()
 * t.teardown(() => s3.close())
 * const store = createS3Store({ ...s3.storeOptions, prefix: 'images' })
 * ```
 */
import { fork, type ChildProcess } from 'node:child_process'
import { EventEmitter, once } from 'node:events'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AbortMultipartUploadCommand, CreateMultipartUploadCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3'
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
  /** every request answered, in order, as far as reported */
  requests: S3Request[]
  /** emits 'request' (S3Request) as each answer is reported */
  events: EventEmitter
  /** resolves once every request answered so far is in `requests` */
  settled (): Promise<void>
  /** what this s3rver can do, found by trying */
  supports: {
    /** ListMultipartUploads (s3rver 3.7: 501) */
    listMultipartUploads: boolean
    /** AbortMultipartUpload (s3rver 3.7: 405) */
    abortMultipartUpload: boolean
    /** ListObjectsV2 past one page of 1000 (needs DES from OpenSSL's legacy provider) */
    listPages: boolean
  }
  /** multipart uploads started and neither completed nor aborted, read from s3rver's folder */
  unfinishedUploads (): Promise<Array<{ key: string, uploadId: string, parts: number }>>
  /** bytes of the parts s3rver has stored for unfinished uploads of `key`, read from its folder at once */
  storedPartBytes (key: string): number
  close (): Promise<void>
}

const CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' }
const REGION = 'us-east-1'

export async function startS3Server (options: { bucket?: string } = {}): Promise<S3TestServer> {
  const bucket = options.bucket ?? 'images'
  const directory = await mkdtemp(join(tmpdir(), 'image-dump-s3-'))
  const child: ChildProcess = fork(fileURLToPath(new URL('s3-server-main.ts', import.meta.url)), [], {
    execArgv: ['--openssl-legacy-provider', '--import', 'tsx'],
    env: { ...process.env, S3_DIRECTORY: directory, S3_BUCKET: bucket },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc']
  })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const exited = once(child, 'exit')

  const requests: S3Request[] = []
  const events = new EventEmitter()
  const pongs = new EventEmitter()
  let ready: (value: { port: number, des: boolean }) => void
  const started = new Promise<{ port: number, des: boolean }>((resolve) => { ready = resolve })
  child.on('message', (message: { type: string, [name: string]: unknown }) => {
    if (message.type === 'ready') ready({ port: message.port as number, des: message.des as boolean })
    else if (message.type === 'pong') pongs.emit(String(message.id))
    else if (message.type === 'request') {
      const url = new URL(message.url as string, 'http://s3')
      const headers = message.headers as IncomingHttpHeaders
      const request: S3Request = { method: message.method as string, path: url.pathname, query: url.searchParams, headers, status: message.status as number, contentLength: Number(headers['content-length'] ?? 0) }
      requests.push(request)
      events.emit('request', request)
    }
  })
  const first = await Promise.race([started, exited.then(() => undefined)])
  if (first === undefined) {
    await rm(directory, { recursive: true, force: true })
    throw new Error(`the S3 test server did not start:\n${stderr}`)
  }
  const endpoint = `http://127.0.0.1:${first.port}`

  let pings = 0
  const uploadsDir = join(directory, bucket, '._S3rver_uploads')
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
    async settled () {
      const id = ++pings
      const pong = once(pongs, String(id))
      child.send({ type: 'ping', id })
      await pong
    },
    supports: { listMultipartUploads: true, abortMultipartUpload: true, listPages: first.des },
    async unfinishedUploads () {
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
        // a part is stored once s3rver has written its .md5 beside it
        return { key, uploadId, parts: files.filter((f) => /^\d+\.md5$/.test(f)).length }
      }))
    },
    storedPartBytes (key: string): number {
      let total = 0
      let ids: string[] = []
      try {
        ids = readdirSync(uploadsDir)
      } catch {}
      for (const uploadId of ids) {
        const dir = join(uploadsDir, uploadId)
        let files: string[]
        let owner: string
        try {
          files = readdirSync(dir)
          owner = readFileSync(join(dir, 'key'), 'utf8')
        } catch {
          continue // completed or aborted meanwhile
        }
        if (owner !== key) continue
        for (const file of files) {
          if (!/^\d+\.md5$/.test(file)) continue
          try {
            total += statSync(join(dir, file.slice(0, -'.md5'.length))).size
          } catch {}
        }
      }
      return total
    },
    async close () {
      if (child.exitCode === null && child.signalCode === null) {
        child.disconnect()
        await exited
      }
      await rm(directory, { recursive: true, force: true })
    }
  }
  try {
    Object.assign(s3.supports, await probe(s3, uploadsDir))
  } catch (err) {
    await s3.close()
    throw err
  }
  return s3
}

/** Asks the server for the two multipart operations s3rver 3.7 is known to lack. */
async function probe (s3: S3TestServer, uploadsDir: string): Promise<Pick<S3TestServer['supports'], 'listMultipartUploads' | 'abortMultipartUpload'>> {
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
    await s3.settled()
    s3.requests.length = 0
  }
}
