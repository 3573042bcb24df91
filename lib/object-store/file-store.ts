/**
 * The ObjectStore contract (contract.ts) on the file system, the default backend: an
 * object is the file `<dir>/<key>`.
 *
 * - An object is written to `<key>.part`, then renamed to its key: rename is atomic within
 *   a folder, so a reader sees the whole file or none. `.part` files are never listed,
 *   stated or read, and a key ending in `.part` is refused (it would name another key's
 *   temporary file). No fsync: a crash may lose an object, never expose half of one.
 * - Folders are made on first need and remembered (a bounded cache), so a batch of
 *   thousands of objects into one folder costs one mkdir rather than a failed open each;
 *   they are never removed (another object may be landing in one at that moment).
 * - An object whose bytes are all in hand (`put`: most images) is written by a thread of its
 *   own (file-writer-thread.ts): the same four calls, with one hand-off per batch of files
 *   instead of four per file through libuv's pool. Removals go the same way, one job each.
 * - An object written as it arrives (`create`: an image larger than one write batch) goes
 *   through the callback API (open, writev, close, rename): no FileHandle object and no
 *   promise-backed request per call, which used less CPU per image in most of our
 *   measurements (bench/micro/fs-calls.ts, BENCHMARKS.md). A descriptor is a plain number
 *   here, so a sink takes care to close it exactly once.
 */
import fs, { promises as fsp } from 'node:fs'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { UnsafeObjectKeyError, type ByteRange, type ObjectInfo, type ObjectRead, type ObjectSink, type ObjectStore } from './contract.js'
import { checkObjectKey, checkObjectPrefix } from './keys.js'
import { createFileWriterThread } from './file-writer-thread.js'

const PART_SUFFIX = '.part'
const KNOWN_DIRS_CAP = 1024

const errnoOf = (err: unknown): string | undefined =>
  err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined

/** Errors that mean "there is no such object" rather than a failing disk. */
const isMissing = (err: unknown): boolean => {
  const code = errnoOf(err)
  return code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR'
}

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

/** A key this backend can hold: the contract's rules, and not one of its temporary names. */
function fileKey (key: string): string {
  checkObjectKey(key)
  if (key.endsWith(PART_SUFFIX)) throw new UnsafeObjectKeyError(`object key ${JSON.stringify(key)} ends in ${PART_SUFFIX}`)
  return key
}

export function createFileStore (dir: string): ObjectStore & { readonly root: string } {
  if (typeof dir !== 'string' || dir === '') throw new TypeError('file store: the folder must be a non-empty path')
  const root = path.resolve(dir)
  // a key has no "..", so joining it to the root stays inside
  const fileOf = (key: string): string => path.join(root, ...key.split('/'))

  // Folders this store has made (or found) already. Bounded: past the cap the oldest
  // entries are forgotten, which only costs another mkdir.
  const knownDirs = new Map<string, Promise<void>>()
  // started on the first put, stopped by close()
  const writer = createFileWriterThread()

  function ensureDir (folder: string): Promise<void> {
    let made = knownDirs.get(folder)
    if (made === undefined) {
      made = fsp.mkdir(folder, { recursive: true }).then(() => {})
      knownDirs.set(folder, made)
      made.catch(() => knownDirs.delete(folder))
      if (knownDirs.size > KNOWN_DIRS_CAP) knownDirs.delete(knownDirs.keys().next().value!)
    }
    return made
  }

  async function openPart (file: string): Promise<number> {
    const folder = path.dirname(file)
    await ensureDir(folder)
    try {
      return await openForWrite(file)
    } catch (err) {
      if (errnoOf(err) !== 'ENOENT') throw err
    }
    // The folder went away after it was made (removed by hand, or an emptied dump's
    // folder): make it again.
    knownDirs.delete(folder)
    await ensureDir(folder)
    return await openForWrite(file)
  }

  /** Every file below `prefix` (a key prefix), as keys, temporary ones included. */
  async function * walk (prefix: string): AsyncGenerator<string> {
    checkObjectPrefix(prefix)
    const slash = prefix.lastIndexOf('/')
    const folderKey = slash === -1 ? '' : prefix.slice(0, slash)
    let entries: fs.Dirent[]
    try {
      entries = await fsp.readdir(folderKey === '' ? root : fileOf(folderKey), { recursive: true, withFileTypes: true })
    } catch (err) {
      if (isMissing(err)) return
      throw err
    }
    for (const entry of entries) {
      if (!entry.isFile()) continue
      const key = path.relative(root, path.join(entry.parentPath, entry.name)).split(path.sep).join('/')
      if (key.startsWith(prefix)) yield key
    }
  }

  return {
    kind: 'file',
    /** the absolute folder the objects are files in */
    root,

    async create (key: string, options: { contentType: string, signal?: AbortSignal }): Promise<ObjectSink> {
      const file = fileOf(fileKey(key))
      const part = file + PART_SUFFIX
      const signal = options.signal
      signal?.throwIfAborted()
      const fd = await openPart(part)
      // a descriptor number is reused as soon as it is closed: never close it twice
      let closed = false
      let ended = false
      const close = async (): Promise<void> => {
        if (closed) return
        closed = true
        await closeFile(fd)
      }
      const sink: ObjectSink = {
        async write (chunks: Buffer[], length: number): Promise<void> {
          if (ended) throw new Error('the object was already committed or aborted')
          await writeAll(fd, chunks, length)
        },
        async commit (): Promise<void> {
          if (ended) throw new Error('the object was already committed or aborted')
          try {
            await close()
            // the download may have been stopped while the last bytes were written
            signal?.throwIfAborted()
            await renameFile(part, file)
            ended = true
          } catch (err) {
            await sink.abort()
            throw err
          }
        },
        async abort (): Promise<void> {
          if (ended) return
          ended = true
          await close().catch(() => {})
          await fsp.rm(part, { force: true }).catch(() => {})
        }
      }
      return sink
    },

    async put (key: string, chunks: readonly Buffer[], length: number, options: { contentType: string, signal?: AbortSignal }): Promise<void> {
      const file = fileOf(fileKey(key))
      options.signal?.throwIfAborted()
      await writer.write(file, chunks, length)
    },

    async stat (key: string): Promise<ObjectInfo | undefined> {
      try {
        const stats = await fsp.stat(fileOf(fileKey(key)))
        return stats.isFile() ? { bytes: stats.size, lastModified: stats.mtime } : undefined
      } catch (err) {
        if (isMissing(err)) return undefined
        throw err
      }
    },

    async read (key: string, range?: ByteRange): Promise<ObjectRead | undefined> {
      let handle: fsp.FileHandle
      try {
        handle = await fsp.open(fileOf(fileKey(key)), 'r')
      } catch (err) {
        if (isMissing(err)) return undefined
        throw err
      }
      try {
        const stats = await handle.stat()
        if (!stats.isFile()) {
          await handle.close()
          return undefined
        }
        if (range !== undefined && !(Number.isSafeInteger(range.start) && Number.isSafeInteger(range.end) && range.start >= 0 && range.start <= range.end && range.end < stats.size)) {
          throw new RangeError(`range ${range.start}-${range.end} is not inside an object of ${stats.size} bytes`)
        }
        // the stream closes the handle once it ends or is destroyed
        const body: Readable = handle.createReadStream(range === undefined ? {} : { start: range.start, end: range.end })
        return { bytes: stats.size, lastModified: stats.mtime, body }
      } catch (err) {
        await handle.close().catch(() => {})
        throw err
      }
    },

    async remove (keys: readonly string[]): Promise<void> {
      // every key is checked before anything is removed
      const files = keys.map((key) => fileOf(fileKey(key)))
      // on the writing thread, all in one job: a re-dump of known bytes removes an object per image
      await writer.remove(files)
      // A folder left empty goes too (a removed dump's), but never the root. Only an empty
      // one can be removed; one being written into holds a `.part` file, and a writer that
      // meets its folder gone makes it again.
      const folders = new Set(files.map((file) => path.dirname(file)).filter((folder) => folder !== root))
      await Promise.all([...folders].map(async (folder) => {
        try {
          await fsp.rmdir(folder)
          knownDirs.delete(folder)
        } catch {}
      }))
    },

    async * list (prefix: string): AsyncIterable<string> {
      for await (const key of walk(prefix)) {
        if (!key.endsWith(PART_SUFFIX)) yield key
      }
    },

    async sweepTemporary (prefix: string): Promise<void> {
      const parts: string[] = []
      for await (const key of walk(prefix)) {
        if (key.endsWith(PART_SUFFIX)) parts.push(key)
      }
      await Promise.all(parts.map((key) => fsp.rm(fileOf(key), { force: true })))
    },

    async close (): Promise<void> {
      knownDirs.clear()
      await writer.close()
    }
  }
}

export type FileStore = ReturnType<typeof createFileStore>
