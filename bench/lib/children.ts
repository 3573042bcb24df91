/**
 * Child processes the harness started (nginx, services), so that whatever way the harness
 * ends (an uncaught error included) none of them outlives it.
 */
import type { ChildProcess } from 'node:child_process'

const alive = new Map<ChildProcess, NodeJS.Signals>()

process.once('exit', () => {
  for (const [child, signal] of alive) {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
  }
})

/** Kills `child` with `signal` if the harness exits while it still runs. */
export function track (child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  alive.set(child, signal)
  child.once('exit', () => alive.delete(child))
}
