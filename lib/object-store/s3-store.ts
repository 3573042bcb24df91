/**
 * The ObjectStore contract (contract.ts) on S3-compatible object storage: an object is the
 * S3 object `<prefix>/<key>` in one bucket. Only what AWS S3, MinIO and Ceph RGW all
 * support is used: path-style addressing, no flexible checksums unless an operation
 * requires one, and Content-MD5 on DeleteObjects (MinIO and Ceph refuse it without).
 *
 * - Writing is s3-sink.ts: bytes stream through, one part (5 MiB by default) in memory at
 *   most, and S3 shows an object only once its PutObject or CompleteMultipartUpload has
 *   succeeded: nothing half-written is ever visible.
 * - abort, a failed part or a failed completion abort the multipart upload. An unfinished
 *   upload left by a process that died holds parts that no read, stat or list returns;
 *   `sweepTemporary` aborts those under a prefix (ListMultipartUploads). MinIO lists
 *   unfinished uploads only for an exact key, so there the sweep finds none, and MinIO
 *   removes them itself after a day (its `stale_uploads_expiry`); on AWS and Ceph a
 *   lifecycle rule (AbortIncompleteMultipartUpload) is the backstop for a sweep never run.
 */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import {
  AbortMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  S3ServiceException,
  paginateListObjectsV2,
  type S3ClientConfig
} from '@aws-sdk/client-s3'
import { UnsafeObjectKeyError, type ByteRange, type ObjectInfo, type ObjectRead, type ObjectSink, type ObjectStore } from './contract.js'
import { createS3Sink } from './s3-sink.js'
import { checkObjectKey, checkObjectPrefix } from './keys.js'

/** The smallest part S3 accepts (every part but the last). */
export const MIN_PART_SIZE = 5 * 1024 * 1024
/** DeleteObjects takes at most this many keys. */
const DELETE_BATCH = 1000

export interface S3StoreOptions {
  bucket: string
  /** '' or '/'-separated safe segments without a leading or trailing '/': every key is stored below it */
  prefix?: string
  /** the store's URL, e.g. http://127.0.0.1:9000; unset: AWS S3 of `region` */
  endpoint?: string
  /** unset: AWS_REGION, AWS_DEFAULT_REGION, then us-east-1 (what MinIO and Ceph expect by default) */
  region?: string
  /** unset: the AWS SDK's default chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, a role) */
  credentials?: S3ClientConfig['credentials']
  /** bytes of each multipart part, at least 5 MiB [5 MiB]; an object up to this size is one PutObject */
  partSize?: number
  /** bytes a sink buffers in front of the part being gathered before `write` waits [256 KiB] */
  bufferBytes?: number
  /** connections to the store at once [128] */
  maxSockets?: number
  /** a request to the store that sends or receives nothing for this long fails [60 s] */
  idleTimeoutMs?: number
  /** keys per ListObjectsV2 page [1000, the most S3 gives] */
  listPageSize?: number
}

export type S3Store = ObjectStore & { readonly bucket: string, readonly prefix: string }

const statusOf = (err: unknown): number | undefined =>
  err instanceof S3ServiceException ? err.$metadata.httpStatusCode : undefined
const codeOf = (err: unknown): string | undefined => (err instanceof S3ServiceException ? err.name : undefined)

/**
 * DeleteObjects must carry a checksum of its body; the SDK sends a CRC32 one, which
 * AWS takes but MinIO and Ceph RGW answer with "Missing required header: Content-Md5".
 * Runs after the SDK's own checksum step (build, normal priority) and before signing.
 */
function useContentMd5ForDeleteObjects (client: S3Client): void {
  client.middlewareStack.add((next, context) => async (args) => {
    const request = args.request as { headers?: Record<string, string>, body?: unknown }
    if (context.commandName !== 'DeleteObjectsCommand' || request.headers === undefined) return await next(args)
    for (const name of Object.keys(request.headers)) {
      const lower = name.toLowerCase()
      if (lower.startsWith('x-amz-checksum-') || lower.startsWith('x-amz-sdk-checksum-') || lower === 'content-md5') delete request.headers[name]
    }
    const body = typeof request.body === 'string' || request.body instanceof Uint8Array ? request.body : ''
    request.headers['content-md5'] = createHash('md5').update(body).digest('base64')
    return await next(args)
  }, { step: 'build', priority: 'low', name: 'imageDumpDeleteObjectsContentMd5' })
}

/** The first `length` bytes of `body`; the rest is not read (the connection is let go). */
function firstBytes (body: Readable, length: number): Readable {
  async function * upTo (): AsyncGenerator<Buffer> {
    let left = length
    try {
      for await (const chunk of body) {
        const piece = (chunk as Buffer).subarray(0, left)
        left -= piece.length
        yield piece
        if (left === 0) return
      }
    } finally {
      body.destroy()
    }
  }
  return Readable.from(upTo(), { objectMode: false })
}

export function createS3Store (options: S3StoreOptions): S3Store {
  const { bucket } = options
  if (typeof bucket !== 'string' || bucket === '') throw new TypeError('S3 store: a bucket is required')
  const prefix = options.prefix ?? ''
  if (prefix !== '') checkObjectKey(prefix)
  const partSize = options.partSize ?? MIN_PART_SIZE
  if (!Number.isSafeInteger(partSize) || partSize < MIN_PART_SIZE) throw new RangeError(`S3 store: partSize must be at least ${MIN_PART_SIZE} bytes`)
  const bufferBytes = options.bufferBytes ?? 256 * 1024
  const maxSockets = options.maxSockets ?? 128

  const client = new S3Client({
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    region: options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
    // bucket in the path: MinIO and Ceph behind one host name have no per-bucket DNS
    forcePathStyle: true,
    // the CRC32 headers and aws-chunked bodies the SDK adds by default are newer than many
    // S3-compatible stores; SHA-256 of every image is computed by the caller anyway
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      httpAgent: { keepAlive: true, maxSockets },
      httpsAgent: { keepAlive: true, maxSockets },
      // a store that stops answering fails the request (and is retried) instead of holding
      // a download, its sink and an abort waiting for ever
      connectionTimeout: 10_000,
      socketTimeout: options.idleTimeoutMs ?? 60_000
    }
  })
  useContentMd5ForDeleteObjects(client)

  const objectKey = (key: string): string => {
    checkObjectKey(key)
    return prefix === '' ? key : `${prefix}/${key}`
  }
  const keyPrefix = (keyStart: string): string => {
    checkObjectPrefix(keyStart)
    return prefix === '' ? keyStart : `${prefix}/${keyStart}`
  }
  const storeStart = prefix === '' ? '' : `${prefix}/`

  async function create (key: string, options: { contentType: string, signal?: AbortSignal }): Promise<ObjectSink> {
    const full = objectKey(key)
    options.signal?.throwIfAborted()
    return createS3Sink(client, { bucket, key: full, contentType: options.contentType, ...(options.signal === undefined ? {} : { signal: options.signal }), partSize, bufferBytes })
  }

  return {
    kind: 's3',
    bucket,
    prefix,

    create,

    async put (key: string, chunks: readonly Buffer[], length: number, options: { contentType: string, signal?: AbortSignal }): Promise<void> {
      // up to a part's size this is one PutObject, sent at commit (s3-sink.ts)
      const sink = await create(key, options)
      try {
        await sink.write([...chunks], length)
        await sink.commit()
      } catch (err) {
        await sink.abort().catch(() => {})
        throw err
      }
    },

    async stat (key: string): Promise<ObjectInfo | undefined> {
      const full = objectKey(key)
      try {
        const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: full }))
        return { bytes: head.ContentLength ?? 0, lastModified: head.LastModified ?? new Date(0) }
      } catch (err) {
        // a HEAD answer has no body to tell a missing key from a missing bucket
        if (statusOf(err) === 404) return undefined
        throw err
      }
    },

    async read (key: string, range?: ByteRange): Promise<ObjectRead | undefined> {
      const full = objectKey(key)
      if (range !== undefined && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.start <= range.end)) {
        throw new RangeError(`range ${range.start}-${range.end} is not a byte range`)
      }
      let answer
      try {
        answer = await client.send(new GetObjectCommand({
          Bucket: bucket,
          Key: full,
          ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` })
        }))
      } catch (err) {
        if (codeOf(err) === 'NoSuchKey') return undefined
        if (statusOf(err) === 416) throw new RangeError(`range ${range?.start}-${range?.end} is not inside the object`)
        throw err
      }
      let body = answer.Body as Readable
      let bytes = answer.ContentLength ?? 0
      if (range !== undefined) {
        const match = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(answer.ContentRange ?? '')
        bytes = Number(match?.[3])
        // S3 shortens a range that runs past the end: the contract wants both ends inside
        if (match === null || Number(match[1]) !== range.start || range.end >= bytes) {
          body.destroy()
          throw new RangeError(`range ${range.start}-${range.end} is not inside the object (${answer.ContentRange ?? 'no Content-Range'})`)
        }
        // a server that sends more than was asked (s3rver reads bytes=0-0 as 0-) is cut short
        if (Number(match[2]) > range.end) body = firstBytes(body, range.end - range.start + 1)
      }
      return { bytes, lastModified: answer.LastModified ?? new Date(0), body }
    },

    async remove (keys: readonly string[]): Promise<void> {
      // every key is checked before anything is removed
      const full = [...new Set(keys.map(objectKey))]
      for (let i = 0; i < full.length; i += DELETE_BATCH) {
        const batch = full.slice(i, i + DELETE_BATCH)
        const answer = await client.send(new DeleteObjectsCommand({
          Bucket: bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true }
        }))
        // a missing key is no error (S3 reports it deleted; some stores say NoSuchKey)
        const errors = (answer.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey')
        if (errors.length > 0) {
          const first = errors[0]!
          throw new Error(`${errors.length} of ${batch.length} objects could not be removed, e.g. ${first.Key ?? '?'}: ${first.Code ?? ''} ${first.Message ?? ''}`.trim())
        }
      }
    },

    async * list (keyStart: string): AsyncIterable<string> {
      const pages = paginateListObjectsV2({ client, pageSize: options.listPageSize ?? 1000 }, { Bucket: bucket, Prefix: keyPrefix(keyStart) })
      for await (const page of pages) {
        for (const object of page.Contents ?? []) {
          const key = object.Key?.slice(storeStart.length)
          if (key === undefined) continue
          // anything else in a shared bucket is not an object this store made
          try {
            checkObjectKey(key)
          } catch (err) {
            if (err instanceof UnsafeObjectKeyError) continue
            throw err
          }
          yield key
        }
      }
    },

    async sweepTemporary (keyStart: string): Promise<void> {
      const Prefix = keyPrefix(keyStart)
      let KeyMarker: string | undefined
      let UploadIdMarker: string | undefined
      for (;;) {
        let page
        try {
          page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix, KeyMarker, UploadIdMarker }))
        } catch (err) {
          // a store that cannot list unfinished uploads has nothing this sweep can reach;
          // they are invisible, and the store's own expiry removes them
          if (statusOf(err) === 501) return
          throw err
        }
        for (const upload of page.Uploads ?? []) {
          if (upload.Key === undefined || upload.UploadId === undefined || !upload.Key.startsWith(Prefix)) continue
          try {
            await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: upload.Key, UploadId: upload.UploadId }))
          } catch (err) {
            // finished or aborted since it was listed
            if (codeOf(err) !== 'NoSuchUpload' && statusOf(err) !== 404) throw err
          }
        }
        if (page.IsTruncated !== true) return
        KeyMarker = page.NextKeyMarker
        UploadIdMarker = page.NextUploadIdMarker
        if (KeyMarker === undefined && UploadIdMarker === undefined) return
      }
    },

    async close (): Promise<void> {
      client.destroy()
    }
  }
}
