import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Reads until `done` holds, every 20 ms, for state a process fills by itself (a service's
 * log, its database); throws naming `what` and the last value after `timeoutMs`.
 */
export async function until<T> (what: string, read: () => Promise<T>, done: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await read()
    if (done(value)) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`)
    await sleep(20)
  }
}
