/**
 * Writing a download under the byte budget: once its headers say how large the image is,
 * the download's reservation is resized to what it will hold (its Content-Length, at most
 * IMAGE_HOLD_BYTES), waiting for memory if it must grow, then the body is written.
 */
import type { Lease } from './byte-budget.js'
import type { Deadline } from './deadline.js'
import type { StorageTarget } from '../storage-layout.js'
import type { ImageWriter, ResponseBody } from './write-image.js'

/**
 * What a download reserves before its headers: its request, socket and parser. The headers
 * resize it at once; a download that then waits to grow may hold up to undici's buffer of
 * an unread response (64 KiB, its highWaterMark) meanwhile.
 */
export const START_RESERVATION_BYTES = 16 * 1024
/**
 * The most one download holds in memory: write-image.ts's batch of 128 KiB, the chunk that
 * crossed it (undici's chunks are at most 64 KiB) and what undici buffers meanwhile (64 KiB).
 */
export const IMAGE_HOLD_BYTES = 256 * 1024

/**
 * `writeImage` sized by the lease `leases` holds for the download's signal (the one thing
 * download.ts hands the writer that identifies the download); the fetcher sets the lease
 * when the download leaves the queue.
 */
export function createReservingWriter (write: ImageWriter, maxImageBytes: number) {
  const leases = new WeakMap<AbortSignal, Lease>()

  /** Sizes the download's reservation from its headers, waiting for memory if it must grow, then writes. */
  async function writeImage (body: ResponseBody, declaredBytes: number, target: StorageTarget, signal: AbortSignal, deadline: Deadline) {
    const lease = leases.get(signal)
    const known = Number.isFinite(declaredBytes) && declaredBytes >= 0
    // an image over the limit is refused by the writer before a byte is read: nothing to reserve
    if (lease !== undefined && !(known && declaredBytes > maxImageBytes)) {
      const want = known ? Math.min(declaredBytes, IMAGE_HOLD_BYTES) : IMAGE_HOLD_BYTES
      if (want <= lease.bytes) {
        await lease.resize(want)
      } else {
        deadline.pause()
        try {
          await lease.resize(want, signal)
        } catch (err) {
          // close(), the group or a dump's stop: the response is dropped unread
          body.on('error', () => {})
          body.destroy()
          throw err
        } finally {
          deadline.resume()
        }
      }
    }
    return await write(body, declaredBytes, target, signal)
  }

  return { leases, writeImage }
}
