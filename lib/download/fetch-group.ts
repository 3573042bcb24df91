import { Interrupted } from './download-errors.js'

/**
 * Downloads that can be stopped together: `abort()` ends those in flight and those still
 * queued with the group as INTERRUPTED (temporary files removed), and any started with it
 * later. A set of controllers rather than one shared AbortSignal: a listener per image on
 * one signal makes every add and remove walk a list as long as the batch.
 */
export class FetchGroup {
  #aborted = false
  readonly #inFlight = new Set<AbortController>()

  get aborted (): boolean { return this.#aborted }

  abort (): void {
    this.#aborted = true
    for (const controller of this.#inFlight) controller.abort(new Interrupted())
  }

  /** @internal the fetcher's: a download of this group started or ended */
  track (controller: AbortController, inFlight: boolean): void {
    if (inFlight) this.#inFlight.add(controller)
    else this.#inFlight.delete(controller)
  }
}
