import { CompiledQuery, type Kysely } from 'kysely'
import { createRequests } from './requests.js'
import type { Database, Engine } from './schema.js'
import type { ImageResult } from '../schemas/dump.js'

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
      for (const { imageId, status } of results) {
        if (status === 'PENDING') throw new TypeError(`image ${imageId} has no outcome to record`)
      }
      const written = await requests.underRunLock(requestId, run, async (trx) => {
        // numbered after the last recorded outcome: the run lock keeps anyone else from
        // recording for this dump meanwhile, so the numbers only grow
        const last = await trx.selectFrom('dump_images').select((eb) => eb.fn.max('seq').as('seq'))
          .where('request_id', '=', requestId).executeTakeFirst()
        const first = Number(last?.seq ?? 0) + 1
        const params: unknown[] = []
        results.forEach(({ imageId, url: _url, status, ...rest }, index) => {
          params.push(requestId, imageId, status, JSON.stringify(rest), first + index, storedAs?.get(imageId) ?? null)
        })
        // Written out rather than built with kysely: the builder makes a frozen node per value
        // and compiles them at every call, about a third of the recording's cost at full speed
        // (BENCHMARKS.md, "Recording outcomes"); the statement only varies in its row count.
        await trx.executeQuery(CompiledQuery.raw(
          `INSERT INTO dump_images (request_id, image_id, status, result, seq, stored_as) VALUES ${'(?, ?, ?, ?, ?, ?), '.repeat(results.length - 1)}(?, ?, ?, ?, ?, ?) ${onDuplicate}`,
          params))
      })
      return written === 'taken' ? 'taken' : 'recorded'
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
     * unless its URL was downloaded for another image of the dump); undefined while it has none.
     */
    async storedImage (requestId: number, imageId: number): Promise<{ status: 'SUCCESS' | 'FAILURE', file: number } | undefined> {
      const row = await db.selectFrom('dump_images').select(['status', 'stored_as'])
        .where('request_id', '=', requestId).where('image_id', '=', imageId).executeTakeFirst()
      return row === undefined ? undefined : { status: row.status, file: row.stored_as ?? imageId }
    },

    /** Deletes every recorded outcome of a dump (one statement: at most MAX_IMAGES rows); how many. */
    async removeOf (requestId: number): Promise<number> {
      const deleted = await db.deleteFrom('dump_images').where('request_id', '=', requestId).executeTakeFirst()
      return Number(deleted.numDeletedRows)
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
