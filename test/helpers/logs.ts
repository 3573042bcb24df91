/**
 * A service log kept in memory: pass `logger` as the server's logger option, then wait for
 * what the service says it is doing (event-driven, instead of sleeping).
 *
 * ```ts
 * const logs = captureLogs()
 * const { app } = await buildTestApp(t, engine, {}, undefined, { logger: logs.logger })
 * await logs.waitFor(/replay: waiting/)
 * ```
 */
export function captureLogs (level = 'info') {
  const lines: string[] = []
  let waiters: Array<{ pattern: RegExp, count: number, resolve: () => void }> = []
  const matching = (pattern: RegExp): number => lines.filter((line) => pattern.test(line)).length
  return {
    lines,
    logger: {
      level,
      stream: {
        write (line: string): void {
          lines.push(line)
          const ready = waiters.filter((w) => matching(w.pattern) >= w.count)
          waiters = waiters.filter((w) => !ready.includes(w))
          for (const w of ready) w.resolve()
        }
      }
    },
    /** How many lines so far match. */
    count: matching,
    /** Resolves once `count` lines (already written or still to come) match. */
    waitFor (pattern: RegExp, count = 1): Promise<void> {
      if (matching(pattern) >= count) return Promise.resolve()
      return new Promise<void>((resolve) => { waiters.push({ pattern, count, resolve }) })
    }
  }
}
