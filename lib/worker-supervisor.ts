/**
 * WORKERS > 1: the first process becomes a supervisor (node:cluster's primary) that serves
 * no request itself. It prepares the database once, in a process of its own, then forks the
 * workers, which share the port (the primary accepts connections and hands them round, as
 * node:cluster does by default on Linux). Each worker is the whole service: its own
 * downloads, undici Agent, database pool, heartbeats and close-with-grace.
 *
 * - A worker that dies is replaced, after a back-off that doubles while workers keep dying
 *   soon after they start (a crash loop does not spin), and the workers still alive are told
 *   its name at once, so that one of them resumes the dumps it left (plugins/dumps/resume.ts)
 *   without waiting for their heartbeats to go stale.
 * - A worker that dies before the service ever listened fails the start: the supervisor
 *   stops the others and exits 1, as a single process that cannot start would.
 * - SIGTERM, SIGINT or SIGHUP: each worker gets SIGTERM and stops as a single process does
 *   (in-flight requests and background dumps finish within SHUTDOWN_GRACE_MS); the
 *   supervisor exits once all have, 0 when each exited 0, else 1. A second signal, or a
 *   worker still running past its grace and a margin, is killed.
 *
 * node:cluster rather than a module: it is what shares one listening socket between
 * processes in Node, and what the process managers that do this (pm2's cluster mode) wrap;
 * what is left to write is the restart policy and the stop, kept here.
 */
import cluster, { type Worker } from 'node:cluster'
import type { Logger } from 'pino'
import { workerInstance } from './instance.js'

export interface SupervisorOptions {
  workers: number
  /** a worker's own stop limit (SHUTDOWN_GRACE_MS); past it and a margin, it is killed */
  shutdownGraceMs: number
  log: Logger
  /** arguments for the one process that prepares the database before the workers start */
  prepareArgs: string[]
  /** arguments for the workers */
  workerArgs: string[]
  /** restart back-off: the first delay, the longest, and how long a worker must live for the next death to start again from the first */
  backoff?: { initialMs?: number, maxMs?: number, resetAfterMs?: number }
}

/** What a supervisor sends its workers. */
export interface SupervisorMessage {
  imageDump: 'resume-dumps-of'
  /** the name (lib/instance.ts) of a worker that died */
  instance: string
}

function isSupervisorMessage (message: unknown): message is SupervisorMessage {
  return typeof message === 'object' && message !== null &&
    (message as SupervisorMessage).imageDump === 'resume-dumps-of' && typeof (message as SupervisorMessage).instance === 'string'
}

/** In a worker: calls `resumeDumpsOf` with the name of each worker its supervisor saw die. */
export function onSupervisorMessages (resumeDumpsOf: (instance: string) => void): void {
  process.on('message', (message: unknown) => {
    if (isSupervisorMessage(message)) resumeDumpsOf(message.instance)
  })
}

/** Runs `args` of the same entry point in a child process and resolves with its exit code. */
async function runOnce (args: string[]): Promise<number> {
  const exec = process.argv[1]
  cluster.setupPrimary({ exec, args })
  const child = cluster.fork()
  return await new Promise((resolve) => child.once('exit', (code, signal) => resolve(signal === null ? code : 1)))
}

/**
 * Supervises the workers until they have all stopped; resolves with the exit code the
 * supervisor should end with.
 */
export async function superviseWorkers (options: SupervisorOptions): Promise<number> {
  const { log } = options
  const initialMs = options.backoff?.initialMs ?? 100
  const maxMs = options.backoff?.maxMs ?? 30_000
  const resetAfterMs = options.backoff?.resetAfterMs ?? 10_000

  const prepared = await runOnce(options.prepareArgs)
  if (prepared !== 0) {
    log.error({ code: prepared }, 'preparing the database failed: not starting the workers')
    return 1
  }
  cluster.setupPrimary({ exec: process.argv[1], args: options.workerArgs })

  // slot → its worker now, and how many of its workers in a row died soon after starting
  const slots = new Map<number, { worker: Worker | undefined, startedAt: number, quickDeaths: number, restart?: NodeJS.Timeout }>()
  const slotOf = new Map<Worker, number>()
  const listening = new Set<Worker>()
  // names of dead workers whose dumps no live worker has been told of yet
  let orphans: string[] = []
  let started = false
  let stopping = false
  let exitCode = 0
  let done: (code: number) => void = () => {}
  const finished = new Promise<number>((resolve) => { done = resolve })

  const live = (): Worker[] => [...slots.values()].flatMap((slot) => slot.worker === undefined ? [] : [slot.worker])

  function tellOrphans (): void {
    if (orphans.length === 0 || listening.size === 0) return
    for (const instance of orphans) {
      const message: SupervisorMessage = { imageDump: 'resume-dumps-of', instance }
      // every live worker: the first to claim a dump takes it (requests.claim), and a worker
      // that dies before it could still leaves the others told
      for (const worker of listening) worker.send(message, (error: Error | null) => { if (error !== null) log.warn({ err: error, worker: worker.id }, 'telling a worker of a dead one failed') })
    }
    orphans = []
  }

  function fork (slot: number): void {
    const worker = cluster.fork()
    const state = slots.get(slot)!
    state.worker = worker
    state.startedAt = performance.now()
    slotOf.set(worker, slot)
    log.info({ worker: worker.id, workerPid: worker.process.pid, slot }, 'worker started')
  }

  function finishIfStopped (): void {
    if (stopping && live().length === 0) done(exitCode)
  }

  cluster.on('listening', (worker) => {
    listening.add(worker)
    log.info({ worker: worker.id, workerPid: worker.process.pid }, 'worker listening')
    tellOrphans()
    if (!started && listening.size === options.workers) {
      started = true
      log.info({ workers: options.workers }, 'all workers listening')
    }
  })

  cluster.on('exit', (worker, code, signal) => {
    const slot = slotOf.get(worker)
    if (slot === undefined) return
    slotOf.delete(worker)
    listening.delete(worker)
    const state = slots.get(slot)!
    state.worker = undefined
    if (stopping) {
      if (code !== 0 || signal !== null) exitCode = 1
      log.info({ worker: worker.id, workerPid: worker.process.pid, code, signal }, 'worker stopped')
      return finishIfStopped()
    }
    if (!started) {
      log.error({ worker: worker.id, workerPid: worker.process.pid, code, signal }, 'a worker exited before the service started: stopping')
      exitCode = 1
      return stop()
    }
    const lived = performance.now() - state.startedAt
    state.quickDeaths = lived < resetAfterMs ? state.quickDeaths + 1 : 0
    const delay = state.quickDeaths === 0 ? 0 : Math.min(maxMs, initialMs * 2 ** (state.quickDeaths - 1))
    log.error({ worker: worker.id, workerPid: worker.process.pid, code, signal, restartInMs: delay }, 'worker died: resuming its dumps elsewhere and starting another')
    orphans.push(workerInstance(process.pid, worker.id))
    tellOrphans()
    state.restart = setTimeout(() => {
      state.restart = undefined
      if (!stopping) fork(slot)
    }, delay)
  })

  function stop (signal?: NodeJS.Signals): void {
    if (stopping) return
    stopping = true
    log.info({ signal, workers: live().length }, 'shutting down: stopping the workers')
    for (const state of slots.values()) clearTimeout(state.restart)
    for (const worker of live()) worker.process.kill('SIGTERM')
    // each worker ends itself SHUTDOWN_GRACE_MS after its signal at the latest; a worker
    // still there well after that is stuck
    setTimeout(() => {
      const stuck = live()
      if (stuck.length === 0) return
      log.error({ workers: stuck.map((worker) => worker.process.pid) }, 'workers still running past their grace: killing them')
      exitCode = 1
      for (const worker of stuck) worker.process.kill('SIGKILL')
    }, options.shutdownGraceMs + 5_000).unref()
    finishIfStopped()
  }

  const onSignal = (signal: NodeJS.Signals): void => {
    if (!stopping) return stop(signal)
    // a second signal: no more waiting
    log.error({ signal }, `second ${signal}: killing the workers`)
    exitCode = 1
    for (const worker of live()) worker.process.kill('SIGKILL')
  }
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, onSignal)

  for (let slot = 1; slot <= options.workers; slot++) {
    slots.set(slot, { worker: undefined, startedAt: 0, quickDeaths: 0 })
    fork(slot)
  }
  return await finished
}
