/**
 * The store a plugin's options name: `store` (any backend, owned and closed by whoever made
 * it), or `storageDir`, the shorthand embedders used before stores existed, for a file
 * store of that folder (owned, and closed, by the plugin).
 */
import type { ObjectStore } from './contract.js'
import { createFileStore } from './file-store.js'

export interface StoreOptions {
  /** where images are stored */
  store?: ObjectStore
  /** shorthand for `store: createFileStore(storageDir)` */
  storageDir?: string
}

export function storeFromOptions (options: StoreOptions, who: string): { store: ObjectStore, owned: boolean } {
  if (options.store !== undefined) {
    if (options.storageDir !== undefined) throw new TypeError(`${who}: pass either store or storageDir, not both`)
    return { store: options.store, owned: false }
  }
  if (typeof options.storageDir !== 'string' || options.storageDir === '') {
    throw new TypeError(`${who}: storageDir must be a non-empty path (or pass a store)`)
  }
  return { store: createFileStore(options.storageDir), owned: true }
}
