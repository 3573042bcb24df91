/**
 * A dump's record as data: numbering a batch, an image's result from its download, the
 * statuses, progress, and reading a stored record back. Plain functions, no I/O.
 */
import { XMLParser } from 'fast-xml-parser'
import type { Batch, BodyFormat } from '../../schemas/batch.js'
import type { DumpResult, ImageResult, ItemResult, Progress } from '../../schemas/dump.js'
import type { RecordedOutcome } from '../../db/dump-images.js'
import type { Completion } from '../../db/requests.js'
import type { FetchOutcome } from '../image-fetcher.js'

type Status = DumpResult['status']

/** SUCCESS when every image succeeded, FAILURE when none did, PARTIAL in between; PENDING while one has no outcome. */
export function statusOf (images: ReadonlyArray<{ status: string }>): Status {
  const ok = images.filter((image) => image.status === 'SUCCESS').length
  if (images.some((image) => image.status === 'PENDING')) return 'PENDING'
  if (ok === images.length) return 'SUCCESS'
  return ok === 0 ? 'FAILURE' : 'PARTIAL'
}

/** Numbers the items (1..n) and the images over the whole request (1..m), in order. */
export function numberBatch (batch: Batch): ItemResult[] {
  let imageId = 0
  return batch.items.map((item, index) => ({
    itemId: index + 1,
    name: item.name,
    ...(item.manufacturer === undefined ? {} : { manufacturer: item.manufacturer }),
    ...(item.brand === undefined ? {} : { brand: item.brand }),
    ...(item.category === undefined ? {} : { category: item.category }),
    processStatus: 'PENDING',
    images: item.images.map((url) => ({ imageId: ++imageId, url, status: 'PENDING' }))
  }))
}

export function imageResult (requestId: number, image: ImageResult, outcome: FetchOutcome): ImageResult {
  if (outcome.status === 'FAILURE') return { imageId: image.imageId, url: image.url, status: 'FAILURE', error: outcome.error }
  return {
    imageId: image.imageId,
    url: image.url,
    status: 'SUCCESS',
    location: `/v1/dumps/${requestId}/images/${image.imageId}`,
    contentType: outcome.contentType,
    bytes: outcome.bytes,
    sha256: outcome.sha256,
    // an image whose header could not be read is stored without them
    ...(outcome.width === undefined || outcome.height === undefined ? {} : { width: outcome.width, height: outcome.height }),
    ...(outcome.reused === true ? { reused: true } : {})
  }
}

/** Applies `update` to every image and recomputes each item's status. */
function mapImages (items: readonly ItemResult[], update: (image: ImageResult) => ImageResult): ItemResult[] {
  return items.map((item) => {
    const images = item.images.map(update)
    return { ...item, images, processStatus: statusOf(images) }
  })
}

/** The items with every pending image that has a recorded outcome given that outcome. */
export function withOutcomes (items: readonly ItemResult[], outcomes: ReadonlyMap<number, RecordedOutcome | ImageResult>): ItemResult[] {
  return mapImages(items, (image) => {
    const outcome = image.status === 'PENDING' ? outcomes.get(image.imageId) : undefined
    return outcome === undefined ? image : { imageId: image.imageId, url: image.url, ...outcome }
  })
}

/** Gives every image without an outcome the INTERRUPTED failure and recomputes the statuses. */
export function interrupt (items: readonly ItemResult[]): { items: ItemResult[], interrupted: number[] } {
  const interrupted: number[] = []
  const completed = mapImages(items, (image): ImageResult => {
    if (image.status !== 'PENDING') return image
    interrupted.push(Number(image.imageId))
    return {
      imageId: image.imageId,
      url: image.url,
      status: 'FAILURE',
      error: { type: 'INTERNAL_ERROR' as const, code: 'INTERRUPTED' as const, message: 'the service stopped before this image had an outcome' }
    }
  })
  return { items: completed, interrupted }
}

export const imagesOf = (items: readonly ItemResult[]): ImageResult[] => items.flatMap((item) => item.images)

export function progressOf (items: readonly ItemResult[]): Progress {
  const images = imagesOf(items)
  const succeeded = images.filter((image) => image.status === 'SUCCESS').length
  const failed = images.filter((image) => image.status === 'FAILURE').length
  return { total: images.length, done: succeeded + failed, succeeded, failed }
}

const retryField = (retryOf: number | null | undefined): { retryOf?: number } => (retryOf == null ? {} : { retryOf })

/** The record of a dump still running: PENDING, with its progress. */
export function runningRecord (requestId: number, items: ItemResult[], retryOf?: number | null): DumpResult {
  return { requestId, ...retryField(retryOf), status: 'PENDING', progress: progressOf(items), items }
}

/** The record of a dump whose every image has an outcome (the v1 answer, and the dump it retries). */
export function finalRecord (requestId: number, items: ItemResult[], retryOf?: number | null): DumpResult {
  return { requestId, ...retryField(retryOf), status: statusOf(imagesOf(items)), items }
}

/** What the list of dumps shows of a complete record. */
export function completionOf (result: DumpResult): Completion {
  const { succeeded, failed } = progressOf(result.items)
  return { status: result.status === 'PENDING' ? 'FAILURE' : result.status, succeeded, failed }
}

/**
 * The batch that retries the failed images of a complete dump: each item with a failure,
 * with only its failed URLs, in their order; undefined when no image failed.
 */
export function failedBatch (items: readonly ItemResult[]): Batch | undefined {
  const retried = items.flatMap((item) => {
    const images = item.images.filter((image) => image.status === 'FAILURE').map((image) => image.url)
    if (images.length === 0) return []
    const { name, manufacturer, brand, category } = item
    return [{ name, ...(manufacturer === undefined ? {} : { manufacturer }), ...(brand === undefined ? {} : { brand }), ...(category === undefined ? {} : { category }), images }]
  })
  return retried.length === 0 ? undefined : { items: retried }
}

const asArray = <T>(value: T | T[] | undefined): T[] => (value === undefined ? [] : Array.isArray(value) ? value : [value])

/** Reads a stored record back into its items, from either format. */
export function readRecord (data: Buffer, format: BodyFormat): ItemResult[] {
  if (format === 'json') return (JSON.parse(data.toString('utf8')) as { items: ItemResult[] }).items
  // trimValues: false, so that a name with spaces around it is read back as it was sent
  const parser = new XMLParser({ parseTagValue: false, trimValues: false, processEntities: true, htmlEntities: false, ignoreAttributes: true, ignoreDeclaration: true })
  // A stored record was written by this service, but parse it as defensively as any XML.
  const doc = parser.parse(data.toString('utf8')) as { result?: { items?: { item?: unknown } } }
  return asArray(doc.result?.items?.item as ItemResult | ItemResult[] | undefined).map((item) => ({
    ...item,
    itemId: Number(item.itemId),
    images: asArray((item.images as unknown as { image?: ImageResult | ImageResult[] } | undefined)?.image)
      .map((image) => ({ ...image, imageId: Number(image.imageId) }))
  }))
}
