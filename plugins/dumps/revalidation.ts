/**
 * Revalidation, for one run of one dump: which of its URLs this user stored before (one
 * look-up for the whole dump, before its downloads start), and, as its outcomes are
 * recorded, the validators to keep for the next dump of the same URLs.
 *
 * What is kept for a URL is the image of this dump that downloaded or reused its bytes:
 * its recorded outcome names the user's object for them (identical bytes are stored once
 * per user, db/stored-objects.ts), which stays while any dump of the user references it,
 * so the newest dump's image is as good as the first's, and outlives an older dump's removal.
 *
 * Validators are an optimisation: a look-up or a write that fails is logged, and the URLs
 * are downloaded as if they had none; the dump goes on.
 */
import type { FastifyBaseLogger } from 'fastify'
import type { UrlValidators, ValidatorsEntry } from '../../db/url-validators.js'
import type { StoredBefore } from '../../lib/download/validators.js'
import { hasValidators } from '../../lib/download/validators.js'
import type { ImageResult } from '../../schemas/dump.js'
import type { FetchOutcome } from '../image-fetcher.js'
import { downloadKey } from './same-url.js'

export function createRevalidation (urlValidators: UrlValidators, log: FastifyBaseLogger, userid: number, requestId: number) {
  let earlier = new Map<string, StoredBefore>()
  // each URL's download key, parsed once per run rather than at every step
  const keys = new Map<string, string>()
  const keyOf = (url: string): string => {
    let key = keys.get(url)
    if (key === undefined) keys.set(url, key = downloadKey(url))
    return key
  }
  // image → the row to write once its outcome is recorded
  const toRemember = new Map<number, ValidatorsEntry>()

  return {
    /** Looks up what the user stored before for `urls` (the URLs the run downloads). */
    async lookUp (urls: readonly string[]): Promise<void> {
      if (urls.length === 0) return
      try {
        earlier = await urlValidators.lookup(userid, urls.map(keyOf))
      } catch (error) {
        log.warn({ err: error, requestId }, 'looking up earlier downloads failed; downloading every image')
      }
    },

    /** What `url` stored before, for a conditional request; undefined for a plain download. */
    before (url: string): StoredBefore | undefined {
      return earlier.get(keyOf(url))
    },

    /**
     * The outcome of the image that downloaded `url` for its dump. A success with
     * validators is kept for the next time; one without replaces validators kept before,
     * which described other bytes.
     */
    fetched (imageId: number, url: string, outcome: FetchOutcome): void {
      if (outcome.status !== 'SUCCESS') return
      const key = keyOf(url)
      if (!hasValidators(outcome.validators) && !earlier.has(key)) return
      toRemember.set(imageId, { url: key, validators: outcome.validators ?? {}, requestId, imageId })
    },

    /** Writes the validators of the images in `batch`, whose outcomes were just recorded. */
    async recorded (batch: readonly ImageResult[]): Promise<void> {
      const entries: ValidatorsEntry[] = []
      for (const { imageId } of batch) {
        const entry = toRemember.get(imageId)
        if (entry === undefined) continue
        entries.push(entry)
        toRemember.delete(imageId)
      }
      if (entries.length === 0) return
      await urlValidators.remember(userid, entries).catch((error: unknown) => {
        log.warn({ err: error, requestId }, 'keeping the validators of downloaded images failed; their URLs will be downloaded again next time')
      })
    }
  }
}

export type Revalidation = ReturnType<typeof createRevalidation>
