/**
 * The folder layout of the image storage, in one place. Under the storage root:
 *
 *   <userid>/<requestId>/<imageId>.<ext>   a stored image, <ext> from its sniffed type (lib/sniff.ts)
 *   <userid>/<requestId>/<imageId>.part    the same image while it is being written
 *
 * An image whose URL was revalidated (not modified since an earlier dump of the user) is a
 * hard link to the earlier file: its own name, the same bytes, stored once.
 *
 * The image fetcher writes through it (resolve, partPath, imagePath, storedPath); the dumps
 * plugin finds and removes files through it, and the retention sweep removes old dumps'
 * folders. No other module builds a storage path.
 *
 * A target is made by the server, never taken from a request, and is still checked: its
 * name is one safe path segment and its folder cannot leave the root.
 */
import { access, link, mkdir, readdir, rm } from 'node:fs/promises'
import path from 'node:path'
import { IMAGE_EXTENSIONS, contentTypeOfExtension } from './sniff.js'

const PART_EXTENSION = 'part'
// A name is one path segment made by the server; this keeps out separators, "..", NUL and dotfiles.
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/

/** Where one image goes, relative to the storage root. */
export interface StorageTarget {
  /** server-made directory relative to the storage root, e.g. "1/42" (userid/requestId) */
  dir: string
  /** server-made file name without extension, e.g. "7" (imageId) */
  name: string
}

/** A StorageTarget checked to stay inside the root. */
export interface ResolvedTarget {
  /** the absolute folder */
  readonly dir: string
  /** the folder relative to the root with '/' separators, '' for the root itself */
  readonly rel: string
  readonly name: string
}

/** A target refused by `resolve`: nothing may be written for it. */
export class UnsafeStorageTargetError extends Error {}

/** The temporary file an image is written to before it gets its final name. */
export function partPath (target: ResolvedTarget): string {
  return path.join(target.dir, `${target.name}.${PART_EXTENSION}`)
}

/** The final file of an image of type `ext`. */
export function imagePath (target: ResolvedTarget, ext: string): string {
  return path.join(target.dir, `${target.name}.${ext}`)
}

/** The final file relative to the root with '/' separators, as a fetch outcome reports it. */
export function storedPath (target: ResolvedTarget, ext: string): string {
  const file = `${target.name}.${ext}`
  return target.rel === '' ? file : `${target.rel}/${file}`
}

// A stored file's key as storedPath makes it: safe segments, the last with its image extension.
const STORED_KEY = /^(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\/)*[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}\.([a-z0-9]+)$/

const hasCode = (err: unknown, code: string): boolean => (err as NodeJS.ErrnoException | null)?.code === code

const isId = (n: number): boolean => Number.isSafeInteger(n) && n >= 0

/** The image id a file of a dump's folder belongs to: its name up to the first dot. */
const imageIdOf = (file: string): string => {
  const dot = file.indexOf('.')
  return dot === -1 ? file : file.slice(0, dot)
}

const isPart = (file: string): boolean => file.endsWith(`.${PART_EXTENSION}`)

export function createStorageLayout (storageDir: string) {
  const root = path.resolve(storageDir)

  const dumpDir = (userid: number, requestId: number): string => `${userid}/${requestId}`

  /** A dump's absolute folder, or null when the ids cannot name one (ids are non-negative integers). */
  function dumpFolder (userid: number, requestId: number): string | null {
    return isId(userid) && isId(requestId) ? path.join(root, dumpDir(userid, requestId)) : null
  }

  /** Removes the files of `folder` that `which` picks; a missing folder has none. */
  async function removeFiles (folder: string, which: (file: string) => boolean): Promise<void> {
    const files = await readdir(folder).catch(() => [] as string[])
    await Promise.all(files.filter(which).map((file) => rm(path.join(folder, file), { force: true })))
  }

  return {
    /** the absolute storage root */
    root,

    /** Checks a target and makes its absolute folder; throws UnsafeStorageTargetError. */
    resolve (target: StorageTarget): ResolvedTarget {
      if (target === null || typeof target !== 'object' || typeof target.dir !== 'string' || typeof target.name !== 'string') {
        throw new UnsafeStorageTargetError('invalid storage target')
      }
      if (!SAFE_NAME.test(target.name)) throw new UnsafeStorageTargetError('invalid storage file name')
      if (target.dir.includes('\0')) throw new UnsafeStorageTargetError('invalid storage directory')
      const dir = path.resolve(root, target.dir)
      const rel = path.relative(root, dir)
      if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) {
        throw new UnsafeStorageTargetError('storage target is outside the storage directory')
      }
      return { dir, rel: rel.split(path.sep).join('/'), name: target.name }
    },

    /**
     * Gives `target` the bytes of the stored image `key` (e.g. "1/42/7.png") without
     * writing them again: a hard link, named as the target's image of the same type, which
     * keeps the bytes while either name is left. Resolves with the new file's key; undefined
     * when `key` names no file any more (removed since), or none this layout could have
     * made, or the file system cannot link: the caller then downloads the image instead.
     */
    async linkImage (key: string, target: ResolvedTarget): Promise<string | undefined> {
      const ext = STORED_KEY.exec(key)?.[1]
      if (ext === undefined || !IMAGE_EXTENSIONS.includes(ext)) return undefined
      const from = path.join(root, key)
      const to = imagePath(target, ext)
      for (let attempt = 0; attempt < 2; attempt++) {
        try {
          await link(from, to)
          return storedPath(target, ext)
        } catch (err) {
          // the target's folder is made on first need, as for a download
          if (attempt === 0 && hasCode(err, 'ENOENT')) await mkdir(target.dir, { recursive: true }).catch(() => {})
          // left by an earlier attempt of the same image: replaced
          else if (attempt === 0 && hasCode(err, 'EEXIST')) await rm(to, { force: true }).catch(() => {})
          else return undefined
        }
      }
      return undefined
    },

    /** Removes one stored file by its key; a missing one is no error. */
    async removeImage (key: string): Promise<void> {
      if (STORED_KEY.test(key)) await rm(path.join(root, key), { force: true })
    },

    /** Where image `imageId` of a dump is written. */
    dumpTarget (userid: number, requestId: number, imageId: number): StorageTarget {
      return { dir: dumpDir(userid, requestId), name: String(imageId) }
    },

    /**
     * The stored file of one image of a dump, relative to the root, and its content type;
     * undefined when there is none (never stored, failed, or removed).
     */
    async findImage (userid: number, requestId: number, imageId: number): Promise<{ file: string, contentType: string } | undefined> {
      if (dumpFolder(userid, requestId) === null || !isId(imageId)) return undefined
      // A dump's folder may hold thousands of files: probing the few possible names is
      // cheaper than listing it.
      for (const ext of IMAGE_EXTENSIONS) {
        const file = `${dumpDir(userid, requestId)}/${imageId}.${ext}`
        if (await access(path.join(root, file)).then(() => true, () => false)) return { file, contentType: contentTypeOfExtension(ext)! }
      }
      return undefined
    },

    /** Removes every file of a dump; the folder itself stays. */
    async removeDump (userid: number, requestId: number): Promise<void> {
      const folder = dumpFolder(userid, requestId)
      if (folder !== null) await removeFiles(folder, () => true)
    },

    /**
     * Removes a dump's folder and every file in it, for good (retention). A folder already
     * gone is no error. The user's folder stays: removing it could race a dump of theirs
     * that is creating its folder in it at that moment.
     */
    async removeDumpFolder (userid: number, requestId: number): Promise<void> {
      const folder = dumpFolder(userid, requestId)
      if (folder !== null) await rm(folder, { recursive: true, force: true })
    },

    /**
     * Removes what a stopped run left of a dump, before it is resumed or closed: every
     * temporary file, and the file of every image not in `keep` (those whose success is
     * recorded). False, with nothing touched, when the ids cannot name a folder.
     */
    async keepOnly (userid: number, requestId: number, keep: Iterable<number>): Promise<boolean> {
      const folder = dumpFolder(userid, requestId)
      if (folder === null) return false
      const kept = new Set([...keep].map(String))
      await removeFiles(folder, (file) => isPart(file) || !kept.has(imageIdOf(file)))
      return true
    }
  }
}

export type StorageLayout = ReturnType<typeof createStorageLayout>
