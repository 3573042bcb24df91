/**
 * A second baseline for latency: a bare undici client (bench/bare-client.mjs) in a process
 * of its own, fetching every URL at once and keeping nothing. curl's `--parallel` opens its
 * connections one after another and so measures curl more than the machine; this measures
 * what a Node.js process on this machine needs for the same answers, the floor under any
 * service built like this one.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { track } from './children.js'

const SCRIPT = fileURLToPath(new URL('../bare-client.mjs', import.meta.url))

export interface BareClient {
  /** every URL at once; resolves with the time from the first request to the last body's end */
  fetch (urls: readonly string[]): Promise<{ ms: number, bytes: number }>
  stop (): Promise<void>
}

type Answer = { type: 'fetched', ms: number, bytes: number } | { type: 'failed', message: string }

export function startBareClient (): BareClient {
  // no --import tsx: plain node, as a service would run
  const child: ChildProcess = fork(SCRIPT, [], { execArgv: [], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  track(child)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    async fetch (urls) {
      const answer = new Promise<Answer>((resolve, reject) => {
        const onExit = (): void => reject(new Error('the bare undici client exited'))
        child.once('exit', onExit)
        child.once('message', (message: Answer) => {
          child.off('exit', onExit)
          resolve(message)
        })
      })
      child.send({ type: 'fetch', urls })
      const got = await answer
      if (got.type === 'failed') throw new Error(`the bare undici client failed: ${got.message}`)
      return { ms: got.ms, bytes: got.bytes }
    },
    async stop () {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      await exited
    }
  }
}
