/**
 * One object being written to S3-compatible storage (the sink of s3-store.ts). Bytes go
 * through a PassThrough with a small buffer into lib-storage's Upload, which sends an object
 * of up to one part as a single PutObject once the stream ends, and a larger one as a
 * multipart upload, one part in flight at a time, completed once the stream ends. Either
 * way the object appears only when that last request succeeds.
 *
 * Memory per sink: the part being gathered or sent (up to partSize) and the stream's
 * buffers; `write` waits while they are full, so a slow store slows the download feeding it.
 */
import { PassThrough } from 'node:stream'
import type { S3Client } from '@aws-sdk/client-s3'
import { Upload } from '@aws-sdk/lib-storage'
import type { ObjectSink } from './contract.js'

export interface S3SinkOptions {
  bucket: string
  /** the object's whole key in the bucket */
  key: string
  contentType: string
  signal?: AbortSignal
  partSize: number
  bufferBytes: number
}

/** A sink that streams one object into S3, visible only once commit() has completed it. */
export function createS3Sink (client: S3Client, options: S3SinkOptions): ObjectSink {
  const { bucket, key, contentType, signal, partSize, bufferBytes } = options
  const body = new PassThrough({ highWaterMark: bufferBytes })
  // the upload's own failure reaches the sink through `finished`; this only keeps a
  // destroyed stream's 'error' from being an uncaught exception
  body.on('error', () => {})
  const upload = new Upload({
    client,
    params: { Bucket: bucket, Key: key, Body: body, ContentType: contentType },
    partSize,
    // one part in flight: memory stays at about one part per sink
    queueSize: 1
  })
  let failure: unknown
  // Started at once so that the upload reads the stream as it is written. It settles
  // only after every request it started has ended (and, on failure, after it has
  // aborted the multipart upload), never before the stream ends or fails.
  const finished = upload.done().then(() => {}, (err: unknown) => {
    failure ??= err
    body.destroy(err instanceof Error ? err : new Error(String(err)))
    throw err
  })
  finished.catch(() => {})

  let state: 'open' | 'committing' | 'committed' | 'aborted' = 'open'
  let aborting: Promise<void> | undefined
  const onAbort = (): void => { void sink.abort() }
  signal?.addEventListener('abort', onAbort, { once: true })
  const notOpen = (): Error => new Error(`the object was already ${state === 'aborted' ? 'aborted' : 'committed'}`)

  /** Resolves when the stream takes more, rejects when the upload failed or the sink was aborted. */
  const drained = (): Promise<void> => new Promise((resolve, reject) => {
    const settle = (): void => {
      body.off('drain', settle)
      body.off('close', settle)
      if (failure !== undefined) reject(failure)
      else if (state === 'aborted') reject(notOpen())
      else resolve()
    }
    body.on('drain', settle)
    body.on('close', settle)
  })

  const sink: ObjectSink = {
    async write (chunks: Buffer[]): Promise<void> {
      if (failure !== undefined) throw failure
      if (state !== 'open') throw notOpen()
      let room = true
      for (const chunk of chunks) room = body.write(chunk)
      if (!room) await drained()
    },

    async commit (): Promise<void> {
      if (failure !== undefined) throw failure
      if (state !== 'open') throw notOpen()
      if (signal?.aborted === true) {
        await sink.abort()
        throw signal.reason
      }
      // from here on the upload completes or fails as a whole; an abort waits for it
      state = 'committing'
      body.end()
      try {
        await finished
        state = 'committed'
      } catch (err) {
        // Upload has aborted its multipart upload already; nothing is visible
        state = 'aborted'
        throw err
      } finally {
        signal?.removeEventListener('abort', onAbort)
      }
    },

    abort (): Promise<void> {
      if (state === 'committing') return finished.catch(() => {})
      if (state === 'committed') return Promise.resolve()
      if (aborting === undefined) {
        state = 'aborted'
        signal?.removeEventListener('abort', onAbort)
        // Failing the stream fails the upload before it ends: no PutObject is ever sent,
        // and a multipart upload in progress is aborted once its part in flight returns.
        // A store that refuses AbortMultipartUpload keeps the invisible parts for the sweep.
        body.destroy(new Error('the object was aborted'))
        aborting = finished.catch(() => {})
      }
      return aborting
    }
  }
  return sink
}
