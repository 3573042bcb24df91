/**
 * Writing one downloaded image to the object store, under the key the storage layout
 * gives it: sniffing its type, hashing it (SHA-256 on the way), reading its dimensions
 * and enforcing the size limit, while its bytes go to an ObjectSink (create, write in
 * batches, commit; abort on every failure). The store keeps the rest of the guarantee: an
 * object is visible only once complete (lib/object-store/contract.ts).
 */
import { createHash } from 'node:crypto'
import type { Dispatcher } from 'undici'
import { createDimensionReader, type DimensionReader } from '../image-dimensions.js'
import { UnsafeObjectKeyError, type ObjectSink, type ObjectStore } from '../object-store/contract.js'
import { SNIFF_BYTES, sniffImageType, type SniffedType } from '../sniff.js'
import { objectKey, type StorageTarget } from '../storage-layout.js'
import { FetchFailure, failure, ioFailure } from './download-errors.js'

/**
 * What was stored: the object's key, its sniffed type, size and digest, and its width and
 * height when its header could be read (lib/image-dimensions.ts).
 */
export interface StoredImage {
  /** the object's key in the store */
  path: string
  contentType: string
  bytes: number
  sha256: string
  width?: number
  height?: number
}

export type ResponseBody = Dispatcher.ResponseData['body']

// Bytes read before they are handed to the sink at once (one writev on the file system):
// fewer calls, bounded memory per image.
const WRITE_BATCH_BYTES = 128 * 1024

/** A store failure as the image's outcome: IO, naming the cause. */
function storeFailure (err: unknown): FetchFailure {
  if (err instanceof FetchFailure) return err
  if (err instanceof UnsafeObjectKeyError) return failure('IO', err.message)
  return ioFailure(err)
}

/** Stops reading a response; the connection is closed rather than drained. */
function abandon (body: ResponseBody): void {
  // destroying an unfinished undici body emits an abort error nobody else is listening for
  body.on('error', () => {})
  body.destroy()
}

/** The writer of one fetcher, into `store`. */
export function createImageWriter (store: ObjectStore, maxImageBytes: number) {
  /**
   * Streams a 2xx body into a new object for `target` (its key ends in the sniffed type's
   * extension), committed once complete. `declaredBytes` is the Content-Length (NaN when
   * absent): over maxImageBytes it is TOO_LARGE before a byte is read. `signal` is the
   * download's: once aborted, the object is not committed. Throws a FetchFailure
   * (TOO_LARGE, NOT_AN_IMAGE, IO), or what reading the body failed with (for the caller to
   * classify); the object is aborted then, leaving nothing.
   *
   * Just enough is read to decide the type before anything else; the bytes are gathered
   * into a batch of up to WRITE_BATCH_BYTES. An image that ends within its first batch (most
   * do) is stored at once with `put` (on the file system: one job for the store's writing
   * thread, no stream machinery); a larger one is created as an object when its first
   * batch is full and handed over batch by batch, each write awaited (back-pressure).
   * Memory per image in flight stays bounded by the batch size.
   */
  async function writeImage (body: ResponseBody, declaredBytes: number, target: StorageTarget, signal: AbortSignal): Promise<StoredImage> {
    if (Number.isFinite(declaredBytes) && declaredBytes > maxImageBytes) {
      abandon(body)
      throw failure('TOO_LARGE', `image is larger than ${maxImageBytes} bytes`)
    }

    const hash = createHash('sha256')
    let bytes = 0
    let batch: Buffer[] = []
    let batchBytes = 0
    let type: SniffedType | undefined
    // reads the header from the chunks as they pass, until it has the size or gives up
    let header: DimensionReader | undefined
    let creating: Promise<ObjectSink> | undefined
    let sink: ObjectSink | undefined

    const sniff = (): SniffedType => {
      const found = sniffImageType(batch.length === 1 ? batch[0]! : Buffer.concat(batch))
      if (found === null) throw failure('NOT_AN_IMAGE', bytes === 0 ? 'the response body is empty' : 'the response is not a supported image')
      return found
    }
    const start = (found: SniffedType): void => {
      header = createDimensionReader(found.ext)
      for (const seen of batch) header.push(seen)
    }
    /** A store call whose failure is the image's IO outcome, unless the download was stopped meanwhile. */
    const inStore = async <T>(call: () => Promise<T>): Promise<T> => {
      try {
        return await call()
      } catch (err) {
        if (signal.aborted) throw err
        throw storeFailure(err)
      }
    }
    const object = async (): Promise<ObjectSink> => await inStore(async () => {
      // an image larger than one batch: its object is written as it arrives
      creating ??= store.create(objectKey(target, type!.ext), { contentType: type!.contentType, signal })
      sink ??= await creating
      return sink
    })
    const flush = async (): Promise<void> => {
      const open = await object()
      try {
        await open.write(batch, batchBytes)
      } catch (err) {
        throw storeFailure(err)
      }
      batch = []
      batchBytes = 0
    }

    try {
      // for-await destroys the body when the loop is left by an exception
      for await (const chunk of body as AsyncIterable<Buffer>) {
        bytes += chunk.length
        if (bytes > maxImageBytes) throw failure('TOO_LARGE', `image is larger than ${maxImageBytes} bytes`)
        hash.update(chunk)
        batch.push(chunk)
        batchBytes += chunk.length
        if (type === undefined) {
          if (batchBytes < SNIFF_BYTES) continue
          type = sniff()
          start(type)
        } else if (!header!.done) {
          header!.push(chunk)
        }
        if (batchBytes >= WRITE_BATCH_BYTES) await flush()
      }
      if (type === undefined) {
        type = sniff()
        start(type)
      }
      const dimensions = header!.finish()
      const key = objectKey(target, type.ext)
      if (creating === undefined) {
        // every byte is in hand: the object is stored at once
        if (signal.aborted) throw signal.reason
        const { contentType } = type
        await inStore(async () => { await store.put(key, batch, batchBytes, { contentType, signal }) })
      } else {
        if (batchBytes > 0) await flush()
        const open = await object()
        // the deadline or close() may have struck while the last bytes were being written
        if (signal.aborted) throw signal.reason
        await inStore(async () => { await open.commit() })
      }
      return { path: key, contentType: type.contentType, bytes, sha256: hash.digest('hex'), ...dimensions }
    } catch (err) {
      abandon(body)
      if (creating !== undefined) {
        const open = sink ?? await creating.catch(() => undefined)
        await open?.abort().catch(() => {})
      }
      throw err
    }
  }

  return writeImage
}

export type ImageWriter = ReturnType<typeof createImageWriter>
