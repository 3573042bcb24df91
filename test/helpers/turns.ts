/**
 * Counts turns of the event loop, for tests about what happens in one turn: `turn` is 0
 * until the first check phase after the call, then grows by one per turn, until `stop()`.
 */
export function countTurns (): { readonly turn: number, stop: () => void } {
  let turn = 0
  let counting = true
  const tick = (): void => {
    turn++
    if (counting) setImmediate(tick)
  }
  setImmediate(tick)
  return {
    get turn () { return turn },
    stop () { counting = false }
  }
}
