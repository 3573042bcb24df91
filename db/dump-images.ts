import { CompiledQuery, type Kysely } from 'kysely'
import { createRequests } from './requests.js'
import type { Database, Engine } from './schema.js'
import type { ImageResult } from '../schemas/dump.js'

/** An image's recorded outcome: its result without the id and URL, which the admission record holds. */
export type RecordedOutcome = Omit<ImageResult, 'imageId' | 'url'> & { status: 'SUCCESS' | 'FAILURE' }

/**
 * The `dump_images` table's owner: the outcome of each image of a dump, recorded as it
 * happens. An image without a row has no outcome yet (PENDING). Rows are only added, never
 * changed: a resumed dump downloads only the images without one.
 */
export function createDumpImages (db: Kysely<Database>, engine: Engine) {
  const requests = createRequests(db, engine)
  // recording an outcome again (a retry after a lost acknowledgement) changes nothing
  const onDuplicate = engine === 'mysql' ? 'ON DUPLICATE KEY UPDATE image_id = image_id' : 'ON CONFLICT (request_id, image_id) DO NOTHING'

  return {
    /**
     * Records outcomes of a dump in one multi-row insert, only while run `run` still holds
     * its row (in the same transaction, so a run taken over cannot add outcomes whose files
     * the new run may already have removed): 'recorded' or 'taken'. Recording an outcome
     * again (a retry after a lost acknowledgement) changes nothing. `storedAs` maps an image
     * to the one whose file holds its bytes, when that is another (the same URL, downloaded once).
     */
    async record (requestId: number, run: number, results: readonly ImageResult[], storedAs?: ReadonlyMap<number, number>): Promise<'recorded' | 'taken'> {
      if (results.length === 0) return 'recorded'
      const params: unknown[] = []
      for (const { imageId, url: _url, status, ...rest } of results) {
        if (status === 'PENDING') throw new TypeError(`image ${imageId} has no outcome to record`)
        params.push(requestId, imageId, status, JSON.stringify(rest), storedAs?.get(imageId) ?? null)
      }
      // Written out rather than built with kysely: the builder makes a frozen node per value
      // and compiles them at every call, about a third of the recording's cost at full speed
      // (BENCHMARKS.md, "Recording outcomes"); the statement only varies in its row count.
      const insert = CompiledQuery.raw(
        `INSERT INTO dump_images (request_id, image_id, status, result, stored_as) VALUES ${'(?, ?, ?, ?, ?), '.repeat(results.length - 1)}(?, ?, ?, ?, ?) ${onDuplicate}`,
        params)
      const written = await requests.underRunLock(requestId, run, async (trx) => { await trx.executeQuery(insert) })
      return written === 'taken' ? 'taken' : 'recorded'
    },

    /** Every recorded outcome of a dump, by image id. */
    async outcomes (requestId: number): Promise<Map<number, RecordedOutcome>> {
      const rows = await db.selectFrom('dump_images').select(['image_id', 'status', 'result'])
        .where('request_id', '=', requestId).execute()
      // MySQL hands the bytes back; SQLite the text that was stored
      return new Map(rows.map((row) => [row.image_id, { status: row.status, ...JSON.parse(typeof row.result === 'string' ? row.result : Buffer.from(row.result).toString('utf8')) }]))
    },

    /**
     * The recorded status of one image and the image whose file holds its bytes (itself,
     * unless its URL was downloaded for another image of the dump); undefined while it has none.
     */
    async storedImage (requestId: number, imageId: number): Promise<{ status: 'SUCCESS' | 'FAILURE', file: number } | undefined> {
      const row = await db.selectFrom('dump_images').select(['status', 'stored_as'])
        .where('request_id', '=', requestId).where('image_id', '=', imageId).executeTakeFirst()
      return row === undefined ? undefined : { status: row.status, file: row.stored_as ?? imageId }
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
