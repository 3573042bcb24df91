/**
 * Writing one downloaded image to disk, under the name the storage layout gives it.
 *
 * Bytes are written to `<name>.part`, then renamed; the temporary file is removed on every
 * failure. Directories are created on first need and never removed (other images of the
 * same request may be landing in them). No fsync: a crash may lose a file, never expose
 * half of one under its final name.
 */
import { createHash } from 'node:crypto'
import fs, { promises as fsp } from 'node:fs'
import type { Dispatcher } from 'undici'
import { createDimensionReader, type DimensionReader } from '../image-dimensions.js'
import { SNIFF_BYTES, sniffImageType, type SniffedType } from '../sniff.js'
import { imagePath, partPath, storedPath, type ResolvedTarget } from '../storage-layout.js'
import { FetchFailure, failure, hasFsCode, ioFailure } from './download-errors.js'

/**
 * What was stored: the file relative to the storage root, its sniffed type, size and
 * digest, and its width and height when its header could be read (lib/image-dimensions.ts).
 */
export interface StoredImage {
  path: string
  contentType: string
  bytes: number
  sha256: string
  width?: number
  height?: number
}

export type ResponseBody = Dispatcher.ResponseData['body']

// Bytes read before they are written with one writev: fewer file-system calls, bounded memory per image.
const WRITE_BATCH_BYTES = 128 * 1024
const KNOWN_DIRS_CAP = 1024

/**
 * The few file-system calls of the hot path, over the callback API: no FileHandle object
 * and no promise-backed request per call, which used less CPU per image in most of our
 * measurements (bench/micro/fs-calls.ts, BENCHMARKS.md). A descriptor is a plain number
 * here, so writeImage takes care to close it exactly once.
 */
function openForWrite (file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'w', (err, fd) => { if (err === null) resolve(fd); else reject(err) }))
}
function writevFile (fd: number, chunks: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => fs.writev(fd, chunks, (err, written) => { if (err === null) resolve(written); else reject(err) }))
}
function writeFile (fd: number, chunk: Buffer): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, chunk, (err, written) => { if (err === null) resolve(written); else reject(err) }))
}
function closeFile (fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => { if (err === null || err === undefined) resolve(); else reject(err) }))
}
function renameFile (from: string, to: string): Promise<void> {
  return new Promise((resolve, reject) => fs.rename(from, to, (err) => { if (err === null) resolve(); else reject(err) }))
}

/** Writes every byte of `chunks` (one writev; a short write, rare on files, is finished with write). */
async function writeAll (fd: number, chunks: Buffer[], length: number): Promise<void> {
  let written = await writevFile(fd, chunks)
  while (written < length) {
    const bytesWritten = await writeFile(fd, Buffer.concat(chunks).subarray(written))
    if (bytesWritten === 0) throw Object.assign(new Error('short write'), { code: 'EIO' })
    written += bytesWritten
  }
}

/** Stops reading a response; the connection is closed rather than drained. */
function abandon (body: ResponseBody): void {
  // destroying an unfinished undici body emits an abort error nobody else is listening for
  body.on('error', () => {})
  body.destroy()
}

/** The writer of one fetcher: it remembers the directories it has made. */
export function createImageWriter (maxImageBytes: number) {
  // Directories this writer has made (or found) already, so a batch of thousands of images
  // into one folder costs one mkdir rather than a failed open per image. Bounded: past
  // the cap the oldest entries are forgotten, which only costs another mkdir.
  const knownDirs = new Map<string, Promise<void>>()

  function ensureDir (dir: string): Promise<void> {
    let made = knownDirs.get(dir)
    if (made === undefined) {
      made = fsp.mkdir(dir, { recursive: true }).then(() => {})
      knownDirs.set(dir, made)
      made.catch(() => knownDirs.delete(dir))
      if (knownDirs.size > KNOWN_DIRS_CAP) knownDirs.delete(knownDirs.keys().next().value!)
    }
    return made
  }

  async function openPart (file: string, dir: string): Promise<number> {
    await ensureDir(dir)
    try {
      return await openForWrite(file)
    } catch (err) {
      if (!hasFsCode(err, 'ENOENT')) throw err
    }
    // The directory went away after it was made (removed by hand, say): make it again.
    knownDirs.delete(dir)
    await ensureDir(dir)
    return await openForWrite(file)
  }

  /**
   * Streams a 2xx body to the target's `.part` file, then renames it to its final name.
   * `declaredBytes` is the Content-Length (NaN when absent): over maxImageBytes it is
   * TOO_LARGE before a byte is read. `signal` is the download's: once aborted, the file is
   * not given its final name. Throws a FetchFailure (TOO_LARGE, NOT_AN_IMAGE, IO), or what
   * reading the body failed with (for the caller to classify); the `.part` file is gone then.
   *
   * Just enough is read to decide the type before the disk is touched; the `.part` file is
   * then opened while reading goes on, and what arrived is written in batches of up to
   * WRITE_BATCH_BYTES with one writev each. A small image thus costs four file-system
   * calls (open, writev, close, rename) and no stream machinery; memory per image in
   * flight stays bounded by the batch size.
   */
  async function writeImage (body: ResponseBody, declaredBytes: number, target: ResolvedTarget, signal: AbortSignal): Promise<StoredImage> {
    if (Number.isFinite(declaredBytes) && declaredBytes > maxImageBytes) {
      abandon(body)
      throw failure('TOO_LARGE', `image is larger than ${maxImageBytes} bytes`)
    }

    const hash = createHash('sha256')
    const partFile = partPath(target)
    let bytes = 0
    let batch: Buffer[] = []
    let batchBytes = 0
    let type: SniffedType | undefined
    // reads the header from the chunks as they pass, until it has the size or gives up
    let header: DimensionReader | undefined
    let opening: Promise<number> | undefined
    let fd: number | undefined
    // a descriptor number is reused as soon as it is closed: never close it twice
    let fdClosed = false

    const sniff = (): SniffedType => {
      const found = sniffImageType(batch.length === 1 ? batch[0]! : Buffer.concat(batch))
      if (found === null) throw failure('NOT_AN_IMAGE', bytes === 0 ? 'the response body is empty' : 'the response is not a supported image')
      return found
    }
    const file = async (): Promise<number> => {
      try {
        fd ??= await opening!
        return fd
      } catch (err) {
        throw ioFailure(err)
      }
    }
    const flush = async (): Promise<void> => {
      const open = await file()
      try {
        await writeAll(open, batch, batchBytes)
      } catch (err) {
        throw ioFailure(err)
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
          opening = openPart(partFile, target.dir)
          // awaited later; until then a failure must not count as unhandled
          opening.catch(() => {})
          header = createDimensionReader(type.ext)
          for (const seen of batch) header.push(seen)
        } else if (!header!.done) {
          header!.push(chunk)
        }
        if (batchBytes >= WRITE_BATCH_BYTES) await flush()
      }
      if (type === undefined) {
        type = sniff()
        opening = openPart(partFile, target.dir)
        header = createDimensionReader(type.ext)
        for (const seen of batch) header.push(seen)
      }
      const dimensions = header!.finish()
      if (batchBytes > 0) await flush()
      try {
        const open = await file()
        fdClosed = true
        await closeFile(open)
        // the deadline or close() may have struck while the last bytes were being written
        if (signal.aborted) throw signal.reason
        await renameFile(partFile, imagePath(target, type.ext))
      } catch (err) {
        if (signal.aborted || err instanceof FetchFailure) throw err
        throw ioFailure(err)
      }
      return { path: storedPath(target, type.ext), contentType: type.contentType, bytes, sha256: hash.digest('hex'), ...dimensions }
    } catch (err) {
      abandon(body)
      if (opening !== undefined) {
        const open = fd ?? await opening.catch(() => undefined)
        if (open !== undefined && !fdClosed) await closeFile(open).catch(() => {})
        await fsp.rm(partFile, { force: true }).catch(() => {})
      }
      throw err
    }
  }

  return writeImage
}

export type ImageWriter = ReturnType<typeof createImageWriter>
