import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { run } from './command.js'

/** The repository (the package's own folder). */
export const root = fileURLToPath(new URL('../..', import.meta.url))

/**
 * `npm run build`, for the tests that need dist: the packed package and the example that
 * imports the package by name. Throws with tsc's output when the build fails.
 *
 * tap runs test files in parallel, and tsc rewrites its outputs in place: two builds of a
 * stale dist at once could let one test load a file the other is halfway through writing.
 * So the builds take turns under flock(1), a lock the kernel releases with its holder (a
 * killed run leaves none behind). The second build then finds dist up to date and, being
 * incremental, writes nothing. Without flock (not Linux) the builds run unlocked.
 */
export async function buildDist (): Promise<void> {
  const lock = join(tmpdir(), `image-dump-build-${createHash('sha256').update(root).digest('hex').slice(0, 16)}.lock`)
  let result = await run('flock', [lock, 'npm', 'run', 'build', '--silent'], { cwd: root })
  if (result.code === null && result.output.includes('ENOENT')) result = await run('npm', ['run', 'build', '--silent'], { cwd: root })
  if (result.code !== 0) throw new Error(`npm run build failed (exit ${String(result.code)}):\n${result.output}`)
}
