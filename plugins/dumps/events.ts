/**
 * A dump's history as events, for GET /v1/dumps/{id}/events: `progress`, one `image` per
 * outcome in the order outcomes were recorded, and a last `complete`.
 *
 * Every event has an id, the number of outcomes it has seen: an image's is its outcome's
 * number (dump_images.seq), a progress event's that of the last outcome it counts (so
 * progress `n` counts exactly the outcomes 1..n), and `complete` is one past the last
 * outcome. Resuming after id `n` therefore sends exactly the outcomes recorded after the
 * n-th: nothing missed, nothing twice. The history comes from the database, so a stream
 * works on any instance, whichever runs the dump, and after the dump has completed.
 *
 * While a dump runs, the stream reads what was recorded since it last looked (two light
 * indexed queries) when this instance records a batch of that dump, and otherwise every
 * `pollMs`: a dump running on another instance is seen within that bound, one running
 * here at once. Outcomes are recorded in batches (outcome-recorder.ts), so a stream never
 * sees more than a batch per round anyway.
 *
 * Images that finished without a recorded outcome (a dump completed as interrupted, or one
 * completed before outcomes were recorded per image) come last, by image id, from the
 * final record, numbered after the recorded ones: the history of a complete dump never
 * changes.
 */
import { EventEmitter, once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import type { RequestLookups } from '../../db/request-lookups.js'
import type { DumpImages, RecordedOutcome } from '../../db/dump-images.js'
import type { BodyFormat } from '../../schemas/batch.js'
import type { DumpResult, ImageResult, ItemResult, Progress } from '../../schemas/dump.js'
import { imagesOf, readRecord, statusOf } from './records.js'

export type DumpEvent =
  | { id: number, event: 'progress', data: Progress & { requestId: number } }
  | { id: number, event: 'image', data: ImageResult & { itemId: number } }
  | { id: number, event: 'complete', data: { requestId: number, status: DumpResult['status'], progress: Progress } }

/** What the stream of one of the user's dumps starts from; see `open`. */
export interface EventSource {
  requestId: number
  format: BodyFormat
  /** the id of the last event sent so far (the stream resumes after it) */
  after: number
}

export interface DumpEventsOptions {
  lookups: RequestLookups
  dumpImages: DumpImages
  /** emits the request id whenever outcomes or the final record of a dump were written here */
  recorded: EventEmitter
  /** how often a running dump's new outcomes are looked for when none was signalled, in ms [1000] */
  pollMs?: number
  /** outcomes read per query [500] */
  pageSize?: number
  /** failed reads in a row after which a stream ends (the client resumes it) [5] */
  maxReadFailures?: number
}

interface Context {
  userid: number
  requestId: number
  /** image id → its item and URL, from the admission (or final) record */
  images: Map<number, { itemId: number, url: string }>
}

interface Counts { succeeded: number, failed: number }

const count = (counts: Counts, status: string): void => {
  if (status === 'SUCCESS') counts.succeeded++
  else if (status === 'FAILURE') counts.failed++
}

/** Lookup from image id to its item and URL. */
function indexImages (items: readonly ItemResult[]): Context['images'] {
  const images = new Map<number, { itemId: number, url: string }>()
  for (const item of items) for (const image of item.images) images.set(Number(image.imageId), { itemId: Number(item.itemId), url: image.url })
  return images
}

/** Why a stream cannot start: no such dump, an id never sent, or nothing after it. */
export type OpenRefusal = 'not found' | 'unknown event id' | 'ended'

export function createDumpEvents (options: DumpEventsOptions) {
  const { lookups, dumpImages, recorded } = options
  const pollMs = options.pollMs ?? 1000
  const pageSize = options.pageSize ?? 500
  const maxReadFailures = options.maxReadFailures ?? 5

  /** The images of a complete dump that have no recorded outcome, numbered after the last recorded one. */
  async function unrecorded (userid: number, requestId: number): Promise<{ final: ItemResult[], events: Array<{ seq: number, image: ImageResult, itemId: number }> }> {
    const stored = await lookups.find(userid, requestId)
    let final: ItemResult[] = []
    try {
      if (stored !== undefined) final = readRecord(stored.data, stored.format)
    } catch {
      // a final record this service cannot read: its recorded outcomes are all there is
    }
    const [ids, last] = await Promise.all([dumpImages.imageIds(requestId), dumpImages.lastSeq(requestId)])
    const events = final.flatMap((item) => item.images
      .filter((image) => image.status !== 'PENDING' && !ids.has(Number(image.imageId)))
      .map((image) => ({ image: { ...image, imageId: Number(image.imageId) }, itemId: Number(item.itemId) })))
      .sort((a, b) => a.image.imageId - b.image.imageId)
      .map((event, index) => ({ ...event, seq: last + index + 1 }))
    return { final, events }
  }

  function imageEvent (context: Context, seq: number, imageId: number, outcome: RecordedOutcome): DumpEvent {
    const { itemId, url } = context.images.get(imageId) ?? { itemId: 0, url: '' }
    return { id: seq, event: 'image', data: { itemId, imageId, url, ...outcome } }
  }

  /** Resolves after `pollMs`, or sooner when this instance records outcomes of the dump, or when `signal` aborts. */
  async function nextRound (requestId: number, signal: AbortSignal): Promise<void> {
    const round = new AbortController()
    const either = AbortSignal.any([signal, round.signal])
    try {
      await Promise.race([
        once(recorded, String(requestId), { signal: either }),
        sleep(pollMs, undefined, { signal: either })
      ])
    } catch {
      // aborted: the caller looks at its signal
    } finally {
      round.abort()
    }
  }

  return {
    /**
     * Checks that the user's dump exists and that `after` is an id its stream sent (or 0),
     * and says where the stream resumes; a refusal otherwise ('ended' when `after` is its
     * `complete` event or later: nothing is left to send).
     */
    async open (userid: number, requestId: number, after: number): Promise<EventSource | OpenRefusal> {
      const stored = await lookups.find(userid, requestId)
      if (stored === undefined) return 'not found'
      if (stored.complete) {
        const { events } = await unrecorded(userid, requestId)
        const completeId = (events.at(-1)?.seq ?? await dumpImages.lastSeq(requestId)) + 1
        if (after >= completeId) return 'ended'
      } else if (after > await dumpImages.lastSeq(requestId)) {
        return 'unknown event id'
      }
      return { requestId, format: stored.format, after }
    },

    /**
     * The events after `source.after`: a `progress` first (the state as of that id), then
     * every outcome recorded since, with a `progress` after each round of them, until the
     * `complete` event. Yields `undefined` after every round with nothing new (a caller may
     * send a keep-alive then). Ends early when `signal` aborts, or after `maxReadFailures`
     * failed reads in a row (the error is thrown).
     */
    async * stream (userid: number, source: EventSource, signal: AbortSignal): AsyncGenerator<DumpEvent | undefined> {
      const { requestId } = source
      const stored = await lookups.find(userid, requestId)
      if (stored === undefined) return
      let items: ItemResult[] = []
      try {
        items = readRecord(stored.data, stored.format)
      } catch {
        // not a record this service wrote: events carry no item or URL
      }
      const context: Context = { userid, requestId, images: indexImages(items) }
      const total = context.images.size
      const progress = (id: number, counts: Counts): DumpEvent =>
        ({ id, event: 'progress', data: { requestId, total, done: counts.succeeded + counts.failed, ...counts } })

      let last = source.after
      const counts: Counts = last > 0 ? await dumpImages.countsUpTo(requestId, last) : { succeeded: 0, failed: 0 }
      if (stored.complete && last > 0) {
        // outcomes without a row that come at or before `last` were seen already
        for (const event of (await unrecorded(userid, requestId)).events) if (event.seq <= last) count(counts, event.image.status)
      }
      yield progress(last, counts)

      let failures = 0
      while (!signal.aborted) {
        let complete: boolean | undefined
        let rows: Awaited<ReturnType<DumpImages['after']>>
        try {
          // completeness first: a dump seen complete has all its outcomes recorded already
          complete = await lookups.isComplete(userid, requestId)
          rows = await dumpImages.after(requestId, last, pageSize)
          failures = 0
        } catch (error) {
          if (++failures >= maxReadFailures) throw error
          await nextRound(requestId, signal)
          continue
        }
        if (complete === undefined) return // removed meanwhile
        for (const row of rows) {
          count(counts, row.outcome.status)
          last = row.seq
          yield imageEvent(context, row.seq, row.imageId, row.outcome)
        }
        if (rows.length > 0) yield progress(last, counts)
        if (rows.length === pageSize) continue
        if (complete) {
          const { final, events } = await unrecorded(userid, requestId)
          const later = events.filter((event) => event.seq > last)
          for (const event of later) {
            count(counts, event.image.status)
            last = event.seq
            yield { id: event.seq, event: 'image', data: { itemId: event.itemId, ...event.image } }
          }
          if (later.length > 0) yield progress(last, counts)
          const status = final.length > 0 ? statusOf(imagesOf(final)) : 'FAILURE'
          yield { id: last + 1, event: 'complete', data: { requestId, status, progress: { total, done: counts.succeeded + counts.failed, ...counts } } }
          return
        }
        yield undefined
        await nextRound(requestId, signal)
      }
    }
  }
}

export type DumpEvents = ReturnType<typeof createDumpEvents>

/** The emitter the dump runner signals recorded outcomes on: any number of streams listen to one dump. */
export function createRecordedSignal (): EventEmitter {
  const emitter = new EventEmitter()
  emitter.setMaxListeners(0)
  return emitter
}
