/**
 * Where stored images live, behind one small contract that every backend keeps: the file
 * system (the default, `file:<dir>`) and S3-compatible object storage (`s3://bucket/prefix`).
 * The dumps, the image route, resume and retention speak only this contract; only a backend
 * knows about folders, `.part` files, buckets or multipart uploads.
 *
 * Keys are made by the server, never taken from a request: '/'-separated segments of
 * [A-Za-z0-9._-], no empty, "." or ".." segment, e.g. "1/42/7.png". A backend refuses any
 * other key with an UnsafeObjectKeyError before touching anything.
 *
 * The guarantee every backend keeps: an object is visible under its key only once complete.
 * A crash, an abort or a failed write at any moment leaves either nothing under the key or
 * the whole object; temporary pieces (a `.part` file, an unfinished multipart upload) are
 * never returned by `read`, `stat` or `list`.
 */
import type { Readable } from 'node:stream'

/** A key that is not one the server could have made: nothing was read, written or removed. */
export class UnsafeObjectKeyError extends Error {}

/** One object being written. Exactly one of commit() or abort() ends it. */
export interface ObjectSink {
  /**
   * Appends `chunks` (`length` bytes in all). Resolves once the backend has taken them, so
   * a slow disk or store slows the download that feeds it instead of buffering (back-pressure).
   */
  write (chunks: Buffer[], length: number): Promise<void>
  /** Makes the object visible under its key, complete. Rejects, leaving nothing visible, if it cannot. */
  commit (): Promise<void>
  /** Drops what was written, leaving nothing visible or kept. Idempotent; safe after a failed write or commit. */
  abort (): Promise<void>
}

export interface ObjectInfo {
  bytes: number
  lastModified: Date
}

export interface ObjectRead extends ObjectInfo {
  /** the bytes of the object, or of the range asked for */
  body: Readable
}

/** An inclusive byte range, as HTTP Range gives it; both ends inside the object. */
export interface ByteRange {
  start: number
  end: number
}

export interface ObjectStore {
  /** which backend this is, for logs, /health and metrics labels */
  readonly kind: 'file' | 's3'
  /** A new object under `key`, written through the sink; `signal` aborting it aborts the sink. */
  create (key: string, options: { contentType: string, signal?: AbortSignal }): Promise<ObjectSink>
  /**
   * Stores a whole object at once: `chunks` (`length` bytes in all) are all of its bytes.
   * Visible only once complete, as through create(); for bytes already in hand it costs
   * less (on the file system one job for a thread of its own, on S3 one PutObject).
   * `signal` aborted before the object is stored leaves nothing.
   */
  put (key: string, chunks: readonly Buffer[], length: number, options: { contentType: string, signal?: AbortSignal }): Promise<void>
  /** Size and time of a complete object; undefined when there is none. */
  stat (key: string): Promise<ObjectInfo | undefined>
  /** The bytes of a complete object (or of `range` of it); undefined when there is none. */
  read (key: string, range?: ByteRange): Promise<ObjectRead | undefined>
  /** Removes the objects; a missing one is no error. */
  remove (keys: readonly string[]): Promise<void>
  /** Every complete object's key that starts with `prefix` ("1/42/" for one dump's folder). */
  list (prefix: string): AsyncIterable<string>
  /** Removes temporary pieces under `prefix` left by a run that stopped (`.part` files, unfinished uploads). */
  sweepTemporary (prefix: string): Promise<void>
  /** Releases connections and handles. */
  close (): Promise<void>
}
