import { accessSync, constants } from 'node:fs'
import path from 'node:path'
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

/** The first executable called `name` on PATH or in `extraDirs`, else null. */
export function findExecutable (name: string, extraDirs: readonly string[] = []): string | null {
  for (const dir of [...(process.env.PATH ?? '').split(path.delimiter), ...extraDirs]) {
    if (dir === '') continue
    const candidate = path.join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return null
}
