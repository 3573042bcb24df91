/**
 * The keys of the objects a dump writes, in one place (any backend, lib/object-store):
 *
 *   <userid>/<requestId>/<imageId>.<ext>   the bytes downloaded for an image, <ext> from its sniffed type
 *
 * An object keeps the key it was created under (object storage cannot rename): when its
 * bytes turn out to be ones the user already has, the image points at the older object
 * and the new one is removed (db/stored-objects.ts), so an image's bytes may live under
 * another dump's key. The key an image's bytes are under is recorded with its outcome;
 * rows from before that find their object here, by probing the names its image could have.
 *
 * No other module builds a key of a dump.
 */
import path from 'node:path'
import { UnsafeObjectKeyError, type ObjectStore } from './object-store/contract.js'
import { checkObjectKey } from './object-store/keys.js'
import { IMAGE_EXTENSIONS, contentTypeOfExtension } from './sniff.js'

/** Where one image goes: a folder key (e.g. "1/42") and a name without extension (e.g. "7"). */
export interface StorageTarget {
  /** server-made folder key, e.g. "1/42" (userid/requestId); '' for the top */
  dir: string
  /** server-made name without extension, e.g. "7" (imageId) */
  name: string
}

const isId = (n: number): boolean => Number.isSafeInteger(n) && n >= 0

/** The key of an object of type `ext` written for `target`. */
export function objectKey (target: StorageTarget, ext: string): string {
  return target.dir === '' ? `${target.name}.${ext}` : `${target.dir}/${target.name}.${ext}`
}

// A target's name is one key segment made by the server; this keeps out separators, "..", NUL and dotfiles.
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/

/** A target checked and put in its plain form ("1/../2" is "2"); throws UnsafeObjectKeyError. */
export function checkStorageTarget (target: StorageTarget): StorageTarget {
  if (target === null || typeof target !== 'object' || typeof target.dir !== 'string' || typeof target.name !== 'string') {
    throw new UnsafeObjectKeyError('invalid storage target')
  }
  if (!SAFE_NAME.test(target.name)) throw new UnsafeObjectKeyError('invalid storage file name')
  const dir = target.dir === '' ? '' : path.posix.normalize(target.dir).replace(/\/$/, '')
  if (dir === '..' || dir.startsWith('../') || dir.startsWith('/')) throw new UnsafeObjectKeyError('storage target is outside the storage directory')
  const checked = { dir: dir === '.' ? '' : dir, name: target.name }
  // the extension does not change whether a key is safe: one check before any download
  checkObjectKey(objectKey(checked, 'png'))
  return checked
}

/** Where image `imageId` of a dump is written. */
export function dumpTarget (userid: number, requestId: number, imageId: number): StorageTarget {
  return { dir: `${userid}/${requestId}`, name: String(imageId) }
}

/** The prefix of every object created for one dump ("3/42/"), or null when the ids cannot name one. */
export function dumpPrefix (userid: number, requestId: number): string | null {
  return isId(userid) && isId(requestId) ? `${userid}/${requestId}/` : null
}

/** The image id an object of a dump's folder was written for: its name up to the first dot. */
export function imageIdOfKey (key: string): number {
  const name = key.slice(key.lastIndexOf('/') + 1)
  const dot = name.indexOf('.')
  return Number(dot === -1 ? name : name.slice(0, dot))
}

/**
 * The object of one image of a dump recorded before keys were recorded, and its type
 * (from its extension); undefined when there is none. A dump's folder may hold thousands of
 * objects: probing the few possible names is cheaper than listing it.
 */
export async function findUnrecordedKey (store: ObjectStore, userid: number, requestId: number, imageId: number): Promise<{ key: string, contentType: string } | undefined> {
  const prefix = dumpPrefix(userid, requestId)
  if (prefix === null || !isId(imageId)) return undefined
  for (const ext of IMAGE_EXTENSIONS) {
    const key = `${prefix}${imageId}.${ext}`
    if (await store.stat(key) !== undefined) return { key, contentType: contentTypeOfExtension(ext)! }
  }
  return undefined
}
