/**
 * A second local S3-protocol server for tests, when the machine has one: moto_server (from
 * Python's moto package, not an npm dependency) on 127.0.0.1 and a free port, with one bucket
 * made. Like s3rver it is a stand-in for a real store, but it implements what s3rver lacks
 * (ListMultipartUploads, AbortMultipartUpload), so the S3 backend's sweep and abort run for
 * real where it is installed. Without it the caller skips, saying why.
 *
 * ```ts
 * const moto = await startMotoServer()
 * if ('unavailable' in moto) return t.skip(moto.unavailable)
 * t.teardown(() => moto.close())
 * ```
 */
import { spawn } from 'node:child_process'
import { CreateBucketCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3'
import type { S3StoreOptions } from '../../lib/object-store/s3-store.js'

export interface MotoServer {
  endpoint: string
  bucket: string
  storeOptions: Pick<S3StoreOptions, 'bucket' | 'endpoint' | 'region' | 'credentials'>
  /** a STORAGE_URL for the bucket under `prefix` */
  url (prefix?: string): string
  /** the AWS_* variables a child process needs */
  env: Record<string, string>
  /** the keys of the multipart uploads started and neither completed nor aborted */
  unfinishedUploads (): Promise<string[]>
  close (): Promise<void>
}

const CREDENTIALS = { accessKeyId: 'moto', secretAccessKey: 'moto' }
const REGION = 'us-east-1'

export async function startMotoServer (options: { bucket?: string } = {}): Promise<MotoServer | { unavailable: string }> {
  const bucket = options.bucket ?? 'images'
  const child = spawn('moto_server', ['-H', '127.0.0.1', '-p', '0'], { stdio: ['ignore', 'pipe', 'pipe'] })
  // not events.once: it would reject on the 'error' of a missing moto_server
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let output = ''
  const port = await new Promise<number | string>((resolve) => {
    child.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ENOENT' ? 'moto_server is not installed (pip install "moto[server]")' : `moto_server did not start: ${err.message}`))
    const read = (chunk: Buffer): void => {
      output += chunk.toString()
      const match = /Running on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (match !== null) resolve(Number(match[1]))
    }
    child.stdout.on('data', read)
    child.stderr.on('data', read)
    void exited.then(() => resolve(`moto_server ended before it listened:\n${output}`))
  })
  if (typeof port === 'string') return { unavailable: port }

  const endpoint = `http://127.0.0.1:${port}`
  const client = new S3Client({ endpoint, region: REGION, credentials: CREDENTIALS, forcePathStyle: true })
  await client.send(new CreateBucketCommand({ Bucket: bucket }))
  return {
    endpoint,
    bucket,
    storeOptions: { bucket, endpoint, region: REGION, credentials: CREDENTIALS },
    url: (prefix = '') => `s3://${bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&region=${REGION}`,
    env: { AWS_ACCESS_KEY_ID: CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey, AWS_REGION: REGION },
    async unfinishedUploads () {
      const keys: string[] = []
      let KeyMarker: string | undefined
      let UploadIdMarker: string | undefined
      for (;;) {
        const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, KeyMarker, UploadIdMarker }))
        for (const upload of page.Uploads ?? []) keys.push(upload.Key ?? '')
        if (page.IsTruncated !== true) return keys.sort()
        KeyMarker = page.NextKeyMarker
        UploadIdMarker = page.NextUploadIdMarker
      }
    },
    async close () {
      client.destroy()
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        await exited
      }
    }
  }
}
