/**
 * STORAGE_URL, the one setting that says where stored images live:
 *
 *   file:<dir>, file:///abs/dir, or a plain path    the file system (the default, from STORAGE_DIR)
 *   s3://<bucket>/<prefix>?endpoint=<url>&region=<r> any S3-compatible store; prefix, endpoint
 *                                                    and region optional (no endpoint: AWS S3)
 *
 * Credentials never go in the URL (a URL is easily logged or shown): the AWS SDK's
 * default chain reads AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile, or a role).
 * A URL that cannot be used is refused with a StorageUrlError naming the problem, so the
 * service does not start with a store it cannot use.
 */
import { fileURLToPath } from 'node:url'
import { UnsafeObjectKeyError } from './contract.js'
import { checkObjectKey } from './keys.js'

export class StorageUrlError extends Error {
  override name = 'StorageUrlError'
}

export type StorageLocation =
  | { kind: 'file', dir: string }
  | { kind: 's3', bucket: string, prefix: string, endpoint?: string, region?: string }

// S3's rule for new bucket names, which MinIO and Ceph also keep: 3-63 characters of
// lower-case letters, digits, dots and hyphens, a letter or digit at each end
const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/
const REGION = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/
const S3_PARAMETERS = new Set(['endpoint', 'region'])

/** Where STORAGE_URL (or a STORAGE_DIR path) says the images live; throws a StorageUrlError. */
export function parseStorageUrl (text: string): StorageLocation {
  if (text.trim() === '') throw new StorageUrlError('it is empty')
  if (text.startsWith('s3:')) return parseS3(text)
  if (text.startsWith('file:')) return { kind: 'file', dir: parseFile(text) }
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]+):/.exec(text)
  if (scheme !== null) throw new StorageUrlError(`the scheme "${scheme[1]}:" is not supported: expected file:<dir> or s3://<bucket>/<prefix>`)
  return { kind: 'file', dir: text }
}

function parseFile (text: string): string {
  if (text.startsWith('file://')) {
    try {
      return fileURLToPath(text)
    } catch (err) {
      throw new StorageUrlError(`${(err as Error).message}: a file URL is file:///absolute/dir, or file:<dir> for a relative one`)
    }
  }
  const dir = text.slice('file:'.length)
  if (dir === '') throw new StorageUrlError('file: names no directory: expected file:<dir>')
  return dir
}

function parseS3 (text: string): StorageLocation {
  if (!text.startsWith('s3://')) throw new StorageUrlError('expected s3://<bucket>/<prefix>')
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new StorageUrlError('it is not a URL: expected s3://<bucket>/<prefix>?endpoint=<url>&region=<r>')
  }
  if (url.username !== '' || url.password !== '') {
    throw new StorageUrlError('credentials do not go in the URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
  }
  if (url.port !== '') throw new StorageUrlError('a port does not go after the bucket: give the store\'s address as ?endpoint=http://host:port')
  if (url.hash !== '') throw new StorageUrlError('a URL fragment (#…) means nothing here')
  const bucket = url.hostname
  if (bucket === '') throw new StorageUrlError('it names no bucket: expected s3://<bucket>/<prefix>')
  if (!BUCKET.test(bucket)) throw new StorageUrlError(`the bucket "${bucket}" is not a valid bucket name: 3 to 63 lower-case letters, digits, dots and hyphens`)

  // from the text itself: URL would resolve "a/../b" to "b" before it could be refused
  const authorityAndPath = text.slice('s3://'.length).split(/[?#]/, 1)[0]!
  const slash = authorityAndPath.indexOf('/')
  let prefix = slash === -1 ? '' : authorityAndPath.slice(slash + 1).replace(/\/+$/, '')
  try {
    prefix = decodeURIComponent(prefix)
  } catch {
    throw new StorageUrlError(`the prefix "${prefix}" is not valid percent-encoding`)
  }
  if (prefix !== '') {
    try {
      checkObjectKey(prefix)
    } catch (err) {
      if (!(err instanceof UnsafeObjectKeyError)) throw err
      throw new StorageUrlError(`the prefix "${prefix}" must be '/'-separated names of A-Z a-z 0-9 . _ - (no empty, "." or ".." part)`)
    }
  }

  const location: StorageLocation = { kind: 's3', bucket, prefix }
  for (const name of new Set(url.searchParams.keys())) {
    if (!S3_PARAMETERS.has(name)) throw new StorageUrlError(`unknown parameter "${name}": expected endpoint or region`)
    if (url.searchParams.getAll(name).length > 1) throw new StorageUrlError(`the parameter "${name}" is given twice`)
  }
  const endpoint = url.searchParams.get('endpoint')
  if (endpoint !== null) location.endpoint = parseEndpoint(endpoint)
  const region = url.searchParams.get('region')
  if (region !== null) {
    if (!REGION.test(region)) throw new StorageUrlError(`the region "${region}" is not a region name (e.g. us-east-1)`)
    location.region = region
  }
  return location
}

function parseEndpoint (text: string): string {
  let endpoint: URL
  try {
    endpoint = new URL(text)
  } catch {
    throw new StorageUrlError(`the endpoint "${text}" is not a URL: expected http(s)://host[:port]`)
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') throw new StorageUrlError(`the endpoint "${text}" is not http(s)://host[:port]`)
  if (endpoint.username !== '' || endpoint.password !== '') throw new StorageUrlError('credentials do not go in the endpoint: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
  if (endpoint.search !== '' || endpoint.hash !== '') throw new StorageUrlError(`the endpoint "${text}" must not have a query or fragment (percent-encode it inside STORAGE_URL)`)
  return text
}
