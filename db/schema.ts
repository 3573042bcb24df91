import type { ColumnType, Generated, Insertable, Selectable } from 'kysely'
import type { BodyFormat } from '../schemas/batch.js'

/**
 * The tables, as the brief named them. This interface is the single source of truth
 * for their shape in code; db/migrations create the same shape on MySQL and SQLite.
 */
export interface UsersTable {
  userid: Generated<number>
  username: string
  plan: string
}

export interface AuthenticationTable {
  userid: number
  /** PHC string of an argon2id hash of the client's SHA-256 password hash */
  passwordhash: string
}

export interface TokensTable {
  userid: number
  user_secret: Buffer
  last_updated: ColumnType<Date | string, Date | string | undefined, Date | string>
}

export interface RequestsTable {
  id: Generated<number>
  userid: number
  dataformat: BodyFormat
  /** The dump in its own format, with ids and statuses added; null until it is recorded. */
  data: Buffer | null
  /** 1 once every image has an outcome (a boolean, stored as 0/1 on both engines) */
  status: ColumnType<number, number | undefined, number>
  created_at: ColumnType<Date | string, never, never>
  /** last sign of life of the instance processing an incomplete row */
  heartbeat_at: ColumnType<Date | string, Date | string | undefined, Date | string>
  /**
   * The client's Idempotency-Key, unique per user (NULL when none was sent). Cleared when
   * the key is used again after it expired, so that it names the newer dump.
   */
  idempotency_key: ColumnType<string | null, string | null | undefined, string | null>
  /** SHA-256 of the canonical batch, stored with a key: a replay must send the same batch */
  batch_sha256: ColumnType<Buffer | null, Buffer | null | undefined, Buffer | null>
  /**
   * How many times the dump was resumed after its instance stopped (0 for the first run).
   * A run holds the number it started with; its writes only land while the row still has
   * it, so a run that was taken over cannot write over the run that took it.
   */
  resumes: ColumnType<number, number | undefined, number>
  /** how many images the dump has (NULL on rows admitted before it was kept) */
  images: ColumnType<number | null, number | null | undefined, number | null>
  /** the final status (SUCCESS, PARTIAL, FAILURE) once complete; NULL before, and on rows completed before it was kept */
  outcome: ColumnType<'SUCCESS' | 'PARTIAL' | 'FAILURE' | null, never, 'SUCCESS' | 'PARTIAL' | 'FAILURE' | null>
  /** how many images succeeded and failed, set with `outcome` */
  succeeded: ColumnType<number | null, never, number | null>
  failed: ColumnType<number | null, never, number | null>
  /** the dump this one retries the failed images of (POST /v1/dumps/{id}/retry) */
  retry_of: ColumnType<number | null, number | null | undefined, never>
  /**
   * The user's admissions numbered 1, 2, 3, … in admission order; null on rows from before
   * the numbering. The quota counts a window from it (db/request-lookups.ts).
   */
  user_seq: ColumnType<number | null, number | null | undefined, never>
  /**
   * The process running an incomplete dump (its admission's, or the resumption that took it
   * over), as named by lib/instance.ts; NULL on rows from before it was kept. A worker's
   * supervisor resumes the dumps of a worker that died by it (plugins/dumps/resume.ts).
   */
  run_by: ColumnType<string | null, string | null | undefined, string | null>
  /** 1 once the dump was deleted (DELETE /v1/dumps/{id}): the row stays for the quota, without its record */
  deleted: ColumnType<number, number | undefined, number>
}

/** The outcome of each image of a dump, recorded as it happens; an image without a row is pending. */
export interface DumpImagesTable {
  request_id: number
  image_id: number
  /** SUCCESS or FAILURE */
  status: 'SUCCESS' | 'FAILURE'
  /** JSON text of the rest of the image's result (location, contentType, bytes, sha256; or error): bytes on MySQL, text on SQLite */
  result: Buffer | string
  /** the order outcomes were recorded in, 1, 2, … per dump (gaps allowed): the events stream's ids */
  seq: number
  /** the image of the same dump whose file holds this one's bytes (its URL was downloaded once for both); NULL: its own */
  stored_as: ColumnType<number | null, number | null | undefined, number | null>
  /** a success's SHA-256 (hex); NULL on failures and on rows recorded before objects were shared */
  sha256: ColumnType<string | null, string | null | undefined, string | null>
  /** the key of the object holding a success's bytes (stored_objects); NULL as sha256 */
  object_key: ColumnType<string | null, string | null | undefined, string | null>
}

/** One object per user and SHA-256: identical bytes are stored once per user (db/stored-objects.ts). */
export interface StoredObjectsTable {
  userid: number
  sha256: string
  object_key: string
  content_type: string
  bytes: ColumnType<number, number, number>
  width: number | null
  height: number | null
}

/** The login throttle's counters: one row per throttled key while its window lasts. */
export interface LoginAttemptsTable {
  /** SHA-256 of the throttled key (client network, or client network and username) */
  throttle_key: Buffer
  attempts: number
  window_start: ColumnType<Date | string, Date | string, Date | string>
}

/**
 * Per user and URL, the validators an origin sent with bytes the user stored, and which
 * stored image they describe: what a later dump of the URL revalidates (db/url-validators.ts).
 */
export interface UrlValidatorsTable {
  userid: number
  /** SHA-256 of the URL as the dumps compare URLs (plugins/dumps/same-url.ts downloadKey) */
  url_key: Buffer
  /** the ETag header as the origin sent it (weak ones too); null when it sent none */
  etag: string | null
  /** the Last-Modified header as the origin sent it; null when it sent none */
  last_modified: string | null
  /** the image whose recorded outcome describes those bytes (its dump_images row, whose sha256 names the stored object) */
  request_id: number
  image_id: number
}

export interface Database {
  users: UsersTable
  authentication: AuthenticationTable
  tokens: TokensTable
  requests: RequestsTable
  dump_images: DumpImagesTable
  stored_objects: StoredObjectsTable
  login_attempts: LoginAttemptsTable
  url_validators: UrlValidatorsTable
}

export type User = Selectable<UsersTable>
export type NewRequest = Insertable<RequestsTable>
export type Engine = 'mysql' | 'sqlite'
