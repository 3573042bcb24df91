/**
 * The list of a user's dumps (GET /v1/dumps): newest first, a page at a time, each with
 * its status and counts, read from the columns kept for it rather than from the record
 * (which can be megabytes). A running dump's counts are those of its recorded outcomes.
 * Rows kept before those columns existed are read from their record instead.
 */
import type { DumpImages } from '../../db/dump-images.js'
import type { ListedRequest, RequestLookups } from '../../db/request-lookups.js'
import type { DumpSummary } from '../../schemas/dump-list.js'
import { imagesOf, progressOf, readRecord, statusOf } from './records.js'

export interface DumpListingOptions {
  lookups: RequestLookups
  dumpImages: DumpImages
}

export function createDumpListing ({ lookups, dumpImages }: DumpListingOptions) {
  /** Status and counts from the stored record: rows from before they were kept. */
  async function fromRecord (userid: number, row: ListedRequest): Promise<Pick<DumpSummary, 'status' | 'progress'>> {
    const stored = await lookups.find(userid, row.id)
    let items: ReturnType<typeof readRecord> = []
    try {
      if (stored !== undefined) items = readRecord(stored.data, stored.format)
    } catch {
      // unreadable: shown as a failed dump without images
    }
    const outcomes = row.complete ? undefined : await dumpImages.countsUpTo(row.id, Infinity)
    const progress = progressOf(items)
    if (outcomes !== undefined) return { status: 'PENDING', progress: { ...progress, done: outcomes.succeeded + outcomes.failed, ...outcomes } }
    return { status: items.length === 0 ? 'FAILURE' : statusOf(imagesOf(items)), progress }
  }

  async function summarize (userid: number, row: ListedRequest): Promise<DumpSummary> {
    const common = { requestId: row.id, createdAt: row.createdAt.toISOString(), ...(row.retryOf === null ? {} : { retryOf: row.retryOf }) }
    if (row.images === null || (row.complete && row.outcome === null)) return { ...common, ...await fromRecord(userid, row) }
    const counts = row.complete
      ? { succeeded: row.succeeded ?? 0, failed: row.failed ?? 0 }
      : await dumpImages.countsUpTo(row.id, Infinity)
    const progress = { total: row.images, done: counts.succeeded + counts.failed, ...counts }
    return { ...common, status: row.complete ? row.outcome ?? 'FAILURE' : 'PENDING', progress }
  }

  return {
    /**
     * At most `limit` of the user's dumps admitted before dump `beforeId` (from the newest
     * with undefined), newest first, and the id to continue before when more exist.
     */
    async page (userid: number, beforeId: number | undefined, limit: number): Promise<{ dumps: DumpSummary[], next: number | undefined }> {
      const rows = await lookups.list(userid, beforeId, limit + 1)
      const shown = rows.slice(0, limit)
      const dumps = await Promise.all(shown.map((row) => summarize(userid, row)))
      return { dumps, next: rows.length > limit ? shown.at(-1)!.id : undefined }
    }
  }
}

export type DumpListing = ReturnType<typeof createDumpListing>
