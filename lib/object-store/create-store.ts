/**
 * The store a STORAGE_URL names, built from its parsed location. The S3 backend (and the
 * AWS SDK, a third of a second to load) is imported only when the URL asks for it.
 */
import type { ObjectStore } from './contract.js'
import type { S3StoreOptions } from './s3-store.js'
import { parseStorageUrl, type StorageLocation } from './storage-url.js'

export interface CreateObjectStoreOptions {
  /** the file system backend, for a file location */
  createFileStore: (dir: string) => ObjectStore
  /** more settings for an s3 location (credentials, part size, …); the URL's own win */
  s3?: Partial<S3StoreOptions>
}

/** The store `url` (a STORAGE_URL, or Config.storage) names. A bad URL throws a StorageUrlError. */
export async function createObjectStore (url: string | StorageLocation, options: CreateObjectStoreOptions): Promise<ObjectStore> {
  const location = typeof url === 'string' ? parseStorageUrl(url) : url
  if (location.kind === 'file') return options.createFileStore(location.dir)
  const { createS3Store } = await import('./s3-store.js')
  return createS3Store({
    ...options.s3,
    bucket: location.bucket,
    prefix: location.prefix,
    ...(location.endpoint === undefined ? {} : { endpoint: location.endpoint }),
    ...(location.region === undefined ? {} : { region: location.region })
  })
}
