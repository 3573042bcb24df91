/**
 * Downloads started a few per turn of the event loop. A dump admits hundreds of images at
 * once, and setting up a request (undici's request, a socket, its connect) costs tens of
 * microseconds each: started all in one turn, none of them is written to the network until
 * the last one is set up, so every answer comes back bunched together and the event loop
 * meets them all at the end. Started a few per turn, the first requests leave while the
 * others are being set up, the answers come back spread over the same span, and the work
 * on them overlaps the wait. (P2, 200 images an origin answers after 500 ms: the answer
 * 20–50 ms sooner; P1 no slower. 8, 16 and 32 per turn were measured: BENCHMARKS.md,
 * section 8.) A lease in the memory budget is held while a start waits for its turn: the
 * wait is a turn or a few, and the fetcher checks for a stop after it.
 *
 * In order: a start that has to wait goes after every start already waiting.
 */
import { setImmediate as nextTurn } from 'node:timers/promises'

/** How many downloads start in one turn of the event loop. */
export const STARTS_PER_TURN = 16

export function createStartPacer (perTurn = STARTS_PER_TURN) {
  if (!Number.isInteger(perTurn) || perTurn < 1) throw new TypeError(`starts per turn must be a positive integer, got ${String(perTurn)}`)
  // starts let through in this turn
  let started = 0
  // whether a turn that resets `started` is already scheduled
  let scheduled = false
  const waiting: Array<() => void> = []

  function schedule (): void {
    if (scheduled) return
    scheduled = true
    void nextTurn().then(() => {
      scheduled = false
      started = 0
      for (const go of waiting.splice(0, perTurn)) {
        started++
        go()
      }
      if (waiting.length > 0) schedule()
    })
  }

  return {
    /**
     * Resolves when the caller may start its download: at once while fewer than
     * `perTurn` started in this turn and none waits, else in a later turn.
     */
    async turn (): Promise<void> {
      schedule()
      if (started < perTurn && waiting.length === 0) {
        started++
        return
      }
      await new Promise<void>((resolve) => { waiting.push(resolve) })
    },

    /** starts waiting for a later turn */
    get waiting (): number { return waiting.length }
  }
}

export type StartPacer = ReturnType<typeof createStartPacer>
