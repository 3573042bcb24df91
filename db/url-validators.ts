import { createHash } from 'node:crypto'
import { CompiledQuery, type Kysely } from 'kysely'
import { parseOutcome } from './dump-images.js'
import type { StoredBefore, Validators } from '../lib/download/validators.js'
import type { Database, Engine } from './schema.js'

/** One row to write: the image of `requestId` whose outcome (just recorded) holds the bytes of `url`. */
export interface ValidatorsEntry {
  /** the URL as the dumps compare URLs (plugins/dumps/same-url.ts downloadKey) */
  url: string
  validators: Validators
  requestId: number
  imageId: number
}

// statements stay well under both engines' limits on placeholders
const CHUNK = 500

const urlKey = (url: string): Buffer => createHash('sha256').update(url).digest()

function chunks<T> (values: readonly T[]): T[][] {
  const out: T[][] = []
  for (let i = 0; i < values.length; i += CHUNK) out.push(values.slice(i, i + CHUNK))
  return out
}

const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0

/**
 * The `url_validators` table's owner: per user and URL, the validators an origin sent with
 * bytes the user stored, and which stored image they describe. A dump looks up all its
 * URLs at once before it downloads, and writes the rows of its successes in batches, after
 * their outcomes are recorded (plugins/dumps/dump-run.ts).
 *
 * A row is only trusted together with the outcome it names and the object that holds its
 * bytes: the lookup joins its dump_images row, takes only a SUCCESS of a dump of the same
 * user recorded with its object, and the user's stored_objects row for that SHA-256, so a
 * dump whose record was removed (retention, DELETE) is never reused from; its row is
 * simply overwritten by the next download. The object may still be removed after the
 * lookup: a reuse is checked again when it is recorded (db/dump-images.ts, record).
 */
export function createUrlValidators (db: Kysely<Database>, engine: Engine) {
  const upsert = engine === 'mysql'
    ? 'ON DUPLICATE KEY UPDATE etag = VALUES(etag), last_modified = VALUES(last_modified), request_id = VALUES(request_id), image_id = VALUES(image_id)'
    : 'ON CONFLICT (userid, url_key) DO UPDATE SET etag = excluded.etag, last_modified = excluded.last_modified, request_id = excluded.request_id, image_id = excluded.image_id'

  return {
    /**
     * What the user stored before for each of `urls` (download keys) that has validators
     * and a recorded success behind them; one query per 500 URLs.
     */
    async lookup (userid: number, urls: readonly string[]): Promise<Map<string, StoredBefore>> {
      const found = new Map<string, StoredBefore>()
      const byKey = new Map<string, string>()
      for (const url of urls) byKey.set(urlKey(url).toString('hex'), url)
      for (const keys of chunks([...byKey.keys()])) {
        const rows = await db.selectFrom('url_validators as v')
          .innerJoin('dump_images as d', (join) => join.onRef('d.request_id', '=', 'v.request_id').onRef('d.image_id', '=', 'v.image_id'))
          // the user's own dump still: an id that came free (SQLite may hand out a deleted row's id again) names someone else's
          .innerJoin('requests as r', (join) => join.onRef('r.id', '=', 'v.request_id').onRef('r.userid', '=', 'v.userid'))
          // the object that holds the bytes, still the user's (a success recorded without one, from before objects were shared, is downloaded again)
          .innerJoin('stored_objects as o', (join) => join.onRef('o.userid', '=', 'v.userid').onRef('o.sha256', '=', 'd.sha256'))
          .select(['v.url_key', 'v.etag', 'v.last_modified', 'o.object_key', 'd.status', 'd.result'])
          .where('v.userid', '=', userid)
          .where('v.url_key', 'in', keys.map((hex) => Buffer.from(hex, 'hex')))
          .where('d.status', '=', 'SUCCESS')
          .execute()
        for (const row of rows) {
          if (row.etag === null && row.last_modified === null) continue
          const url = byKey.get(Buffer.from(row.url_key).toString('hex'))
          const outcome = parseOutcome(row)
          // a record this service did not write whole is downloaded again rather than trusted
          if (url === undefined || typeof outcome.contentType !== 'string' || !isCount(outcome.bytes) || typeof outcome.sha256 !== 'string') continue
          found.set(url, {
            validators: { ...(row.etag === null ? {} : { etag: row.etag }), ...(row.last_modified === null ? {} : { lastModified: row.last_modified }) },
            objectKey: row.object_key,
            contentType: outcome.contentType,
            bytes: outcome.bytes,
            sha256: outcome.sha256,
            ...(isCount(outcome.width) && isCount(outcome.height) ? { width: outcome.width, height: outcome.height } : {})
          })
        }
      }
      return found
    },

    /**
     * Writes (or overwrites) the rows of `entries`, one multi-row statement per 500. Rows
     * are written in key order, so two dumps of one user writing the same URLs cannot
     * deadlock on MySQL.
     */
    async remember (userid: number, entries: readonly ValidatorsEntry[]): Promise<void> {
      const keyed = entries.map((entry) => ({ key: urlKey(entry.url), entry })).sort((a, b) => Buffer.compare(a.key, b.key))
      for (const batch of chunks(keyed)) {
        const params: unknown[] = []
        for (const { key, entry } of batch) {
          params.push(userid, key, entry.validators.etag ?? null, entry.validators.lastModified ?? null, entry.requestId, entry.imageId)
        }
        // written out for the same reason as dump_images' insert (db/dump-images.ts): one statement, no builder cost per value
        await db.executeQuery(CompiledQuery.raw(
          `INSERT INTO url_validators (userid, url_key, etag, last_modified, request_id, image_id) VALUES ${'(?, ?, ?, ?, ?, ?), '.repeat(batch.length - 1)}(?, ?, ?, ?, ?, ?) ${upsert}`,
          params))
      }
    }
  }
}

export type UrlValidators = ReturnType<typeof createUrlValidators>
