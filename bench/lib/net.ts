import { setTimeout as sleep } from 'node:timers/promises'

export { freePort } from '../../test/helpers/server-process.js'

/** Polls `check` every 25 ms until it returns true; throws what it throws, or after `timeoutMs`. */
export async function waitFor (check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(25)
  }
}
