import { CompiledQuery, type Kysely } from 'kysely'
import { createRequestLocks } from './request-locks.js'
import type { Executor } from './requests.js'
import { createStoredObjects, type ObjectBytes } from './stored-objects.js'
import type { Database, Engine } from './schema.js'
import type { ImageResult } from '../schemas/dump.js'

/**
 * Where the successes of a recording are stored: `keys` has the key of the object written
 * for each (by image id); `redundant` receives, once recorded, the keys of objects whose
 * bytes the user had already: the images point at the older object, and the caller removes these.
 *
 * A reused success (`reused`: the origin answered 304 to an earlier dump's validators) had
 * no object written: it points at the user's object for its SHA-256, if the user still has
 * one when it is recorded. If not (the dump that stored it was removed since the validators
 * were looked up), it is not recorded: its image id lands in `gone`, for the caller to
 * download again.
 */
export interface Placement {
  keys: ReadonlyMap<number, string>
  redundant: string[]
  gone?: number[]
}

/** An image's recorded outcome: its result without the id and URL, which the admission record holds. */
export type RecordedOutcome = Omit<ImageResult, 'imageId' | 'url'> & { status: 'SUCCESS' | 'FAILURE' }

/** A dump_images row's outcome, from either engine's representation of its result. */
export function parseOutcome (row: { status: 'SUCCESS' | 'FAILURE', result: Buffer | string }): RecordedOutcome {
  // MySQL hands the bytes back; SQLite the text that was stored
  return { status: row.status, ...JSON.parse(typeof row.result === 'string' ? row.result : Buffer.from(row.result).toString('utf8')) }
}

/**
 * The `dump_images` table's owner: the outcome of each image of a dump, recorded as it
 * happens. An image without a row has no outcome yet (PENDING). Rows are only added, never
 * changed: a resumed dump downloads only the images without one. `seq` numbers a dump's
 * outcomes in the order they were recorded, for the events stream.
 */
export function createDumpImages (db: Kysely<Database>, engine: Engine) {
  const locks = createRequestLocks(db, engine)
  const storedObjects = createStoredObjects(engine)
  // recording an outcome again (a retry after a lost acknowledgement) changes nothing
  const onDuplicate = engine === 'mysql' ? 'ON DUPLICATE KEY UPDATE image_id = image_id' : 'ON CONFLICT (request_id, image_id) DO NOTHING'

  return {
    /**
     * Records outcomes of a dump in one multi-row insert, only while run `run` still holds
     * its row (in the same transaction, so a run taken over cannot add outcomes whose files
     * the new run may already have removed): 'recorded' or 'taken'. Recording an outcome
     * again (a retry after a lost acknowledgement) changes nothing. `storedAs` maps an image
     * to the one whose file holds its bytes, when that is another (the same URL, downloaded once).
     *
     * With `placement`, each success names the object that holds its bytes: the user's
     * object for its SHA-256 (stored_objects), which is the one written for it unless the
     * user had those bytes already (content-addressed per user); then the new object's key
     * lands in `placement.redundant`, for the caller to remove once this resolved. A reused
     * success points at the user's object for its SHA-256 as it is at this moment, under the
     * same locks; one whose object is gone is left unrecorded and named in `placement.gone`.
     */
    async record (requestId: number, run: number, results: readonly ImageResult[], storedAs?: ReadonlyMap<number, number>, placement?: Placement): Promise<'recorded' | 'taken'> {
      if (results.length === 0) return 'recorded'
      for (const { imageId, status, reused } of results) {
        if (status === 'PENDING') throw new TypeError(`image ${imageId} has no outcome to record`)
        if (reused === true && placement !== undefined && placement.gone === undefined) throw new TypeError(`image ${imageId} is a reuse: its placement needs \`gone\``)
      }
      const written = await locks.underRunLock(requestId, run, async (trx, userid) => {
        const objects: ObjectBytes[] = []
        const reusing: string[] = []
        for (const result of results) {
          if (result.status !== 'SUCCESS' || result.sha256 === undefined || placement === undefined) continue
          if (result.reused === true) {
            reusing.push(result.sha256)
            continue
          }
          const key = placement.keys.get(result.imageId)
          if (key === undefined) continue
          objects.push({ sha256: result.sha256, key, contentType: result.contentType ?? 'application/octet-stream', bytes: result.bytes ?? 0, width: result.width, height: result.height })
        }
        // the objects of reuses are checked (and locked) with those claimed, in one pass in
        // SHA-256 order: a removal of the same bytes waits for this recording or the other way round
        const owners = await storedObjects.claim(trx, userid, objects, reusing)
        const gone: number[] = []
        const params: unknown[] = []
        let rows = 0
        // numbered after the last recorded outcome: the run lock keeps anyone else from
        // recording for this dump meanwhile, so the numbers only grow
        const last = await trx.selectFrom('dump_images').select((eb) => eb.fn.max('seq').as('seq'))
          .where('request_id', '=', requestId).executeTakeFirst()
        const first = Number(last?.seq ?? 0) + 1
        for (const { imageId, url: _url, status, ...rest } of results) {
          const sha256 = status === 'SUCCESS' ? rest.sha256 ?? null : null
          let key: string | null
          if (sha256 !== null && rest.reused === true && placement !== undefined) {
            key = owners.get(sha256) ?? null
            // its object was removed since: no row points at a removed object
            if (key === null) {
              gone.push(imageId)
              continue
            }
          } else {
            key = sha256 === null || placement?.keys.has(imageId) !== true ? null : owners.get(sha256) ?? null
          }
          params.push(requestId, imageId, status, JSON.stringify(rest), first + rows++, storedAs?.get(imageId) ?? null, sha256, key)
        }
        // Written out rather than built with kysely: the builder makes a frozen node per value
        // and compiles them at every call, about a third of the recording's cost at full speed
        // (BENCHMARKS.md, "Recording outcomes"); the statement only varies in its row count.
        if (rows > 0) {
          await trx.executeQuery(CompiledQuery.raw(
            `INSERT INTO dump_images (request_id, image_id, status, result, seq, stored_as, sha256, object_key) VALUES ${'(?, ?, ?, ?, ?, ?, ?, ?), '.repeat(rows - 1)}(?, ?, ?, ?, ?, ?, ?, ?) ${onDuplicate}`,
            params))
        }
        // the objects written for bytes the user had already: no row points at them
        const kept = new Set(owners.values())
        return { redundant: [...new Set(objects.map((object) => object.key))].filter((key) => !kept.has(key)), gone }
      })
      if (written === 'taken') return 'taken'
      placement?.redundant.push(...written.redundant)
      placement?.gone?.push(...written.gone)
      return 'recorded'
    },

    /** The outcomes recorded after number `afterSeq`, in the order they were recorded, at most `limit`. */
    async after (requestId: number, afterSeq: number, limit: number): Promise<Array<{ seq: number, imageId: number, outcome: RecordedOutcome }>> {
      const rows = await db.selectFrom('dump_images').select(['seq', 'image_id', 'status', 'result'])
        .where('request_id', '=', requestId).where('seq', '>', afterSeq)
        .orderBy('seq').limit(limit).execute()
      return rows.map((row) => ({ seq: Number(row.seq), imageId: row.image_id, outcome: parseOutcome(row) }))
    },

    /** The number of the last outcome recorded for a dump, 0 before the first. */
    async lastSeq (requestId: number): Promise<number> {
      const row = await db.selectFrom('dump_images').select((eb) => eb.fn.max('seq').as('seq'))
        .where('request_id', '=', requestId).executeTakeFirst()
      return Number(row?.seq ?? 0)
    },

    /** The ids of the images of a dump that have a recorded outcome. */
    async imageIds (requestId: number): Promise<Set<number>> {
      const rows = await db.selectFrom('dump_images').select('image_id').where('request_id', '=', requestId).execute()
      return new Set(rows.map((row) => row.image_id))
    },

    /** How many outcomes were recorded up to number `seq` (all with Infinity), by status. */
    async countsUpTo (requestId: number, seq: number): Promise<{ succeeded: number, failed: number }> {
      let query = db.selectFrom('dump_images').select((eb) => ['status', eb.fn.countAll<number>().as('count')])
        .where('request_id', '=', requestId)
      if (Number.isFinite(seq)) query = query.where('seq', '<=', seq)
      const rows = await query.groupBy('status').execute()
      const count = (status: string): number => Number(rows.find((row) => row.status === status)?.count ?? 0)
      return { succeeded: count('SUCCESS'), failed: count('FAILURE') }
    },

    /** Every recorded outcome of a dump, by image id. */
    async outcomes (requestId: number): Promise<Map<number, RecordedOutcome>> {
      const rows = await db.selectFrom('dump_images').select(['image_id', 'status', 'result'])
        .where('request_id', '=', requestId).execute()
      return new Map(rows.map((row) => [row.image_id, parseOutcome(row)]))
    },

    /**
     * The recorded status of one image and the image whose file holds its bytes (itself,
     * unless its URL was downloaded for another image of the dump); undefined while it has
     * none. A success recorded with its object also has that object's key, its SHA-256 and
     * its type.
     */
    async storedImage (requestId: number, imageId: number): Promise<{ status: 'SUCCESS' | 'FAILURE', file: number, key?: string, sha256?: string, contentType?: string } | undefined> {
      const row = await db.selectFrom('dump_images').select(['status', 'stored_as', 'object_key', 'result'])
        .where('request_id', '=', requestId).where('image_id', '=', imageId).executeTakeFirst()
      if (row === undefined) return undefined
      const stored = { status: row.status, file: row.stored_as ?? imageId }
      if (row.status !== 'SUCCESS') return stored
      const outcome = parseOutcome(row)
      return {
        ...stored,
        ...(row.object_key === null ? {} : { key: row.object_key }),
        ...(outcome.sha256 === undefined ? {} : { sha256: outcome.sha256 }),
        ...(outcome.contentType === undefined ? {} : { contentType: outcome.contentType })
      }
    },

    /** Deletes every recorded outcome of a dump (one statement: at most MAX_IMAGES rows); how many. */
    async removeOf (requestId: number, executor: Executor = db): Promise<number> {
      const deleted = await executor.deleteFrom('dump_images').where('request_id', '=', requestId).executeTakeFirst()
      return Number(deleted.numDeletedRows)
    },

    /**
     * The objects a dump's recorded successes are in: the keys its rows name, and the ids of
     * successes recorded before keys were (their object is their own, in the dump's folder).
     */
    async recordedObjects (requestId: number): Promise<{ keys: Set<string>, unkeyed: Set<number> }> {
      const rows = await db.selectFrom('dump_images').select(['image_id', 'object_key'])
        .where('request_id', '=', requestId).where('status', '=', 'SUCCESS').execute()
      const keys = new Set<string>()
      const unkeyed = new Set<number>()
      for (const row of rows) {
        if (row.object_key === null) unkeyed.add(row.image_id)
        else keys.add(row.object_key)
      }
      return { keys, unkeyed }
    },

    /** The SHA-256s of a dump's successes recorded with their object. */
    async sha256sOf (executor: Executor, requestId: number): Promise<string[]> {
      const rows = await executor.selectFrom('dump_images').select('sha256').distinct()
        .where('request_id', '=', requestId).where('status', '=', 'SUCCESS').where('sha256', 'is not', null).execute()
      return rows.map((row) => row.sha256!)
    },

    /**
     * Which of these SHA-256s a success of the user's still has (any dump of theirs): the
     * objects that hold those bytes are still referenced. Through the sha256 index.
     */
    async referenced (executor: Executor, userid: number, sha256s: readonly string[]): Promise<Set<string>> {
      if (sha256s.length === 0) return new Set()
      const rows = await executor.selectFrom('dump_images').innerJoin('requests', 'requests.id', 'dump_images.request_id')
        .select('dump_images.sha256').distinct()
        .where('dump_images.sha256', 'in', [...sha256s]).where('dump_images.status', '=', 'SUCCESS').where('requests.userid', '=', userid)
        .execute()
      return new Set(rows.map((row) => row.sha256!))
    },

    /** The recorded status of one image, undefined while it has none. */
    async statusOf (requestId: number, imageId: number): Promise<'SUCCESS' | 'FAILURE' | undefined> {
      const row = await db.selectFrom('dump_images').select('status')
        .where('request_id', '=', requestId).where('image_id', '=', imageId).executeTakeFirst()
      return row?.status
    }
  }
}

export type DumpImages = ReturnType<typeof createDumpImages>
