/**
 * The whole service's metrics when it runs as workers (WORKERS > 1): a scrape of the shared
 * port lands on one worker, which asks the supervisor; the supervisor gathers every worker's
 * registry with prom-client's own cluster support (AggregatorRegistry.clusterMetrics(), which
 * asks each worker over the cluster's IPC channel and merges their answers by each metric's
 * `aggregator`) and sends the text back.
 *
 * Everything here is process-wide (IPC listeners, prom-client's list of registries a worker
 * answers with), so it is started by the process entry (server.ts), never by a plugin: an app
 * that embeds the plugins without the supervisor counts per process, as before.
 *
 * Bounded: a worker that does not answer (stopped, or its event loop stuck) makes prom-client
 * give up after its own 5 s, and the asking worker gives up after `timeoutMs` whatever the
 * supervisor does; either way the scrape fails rather than hangs or comes back partial.
 */
import cluster, { type Worker } from 'node:cluster'
import type { Logger } from 'pino'
import { AggregatorRegistry, type Registry } from 'prom-client'

/** How long a worker waits for the supervisor's gathered metrics: under prom-client's 5 s and Prometheus' default 10 s scrape timeout. */
export const GATHER_TIMEOUT_MS = 4_000

/** The messages between a worker and its supervisor about metrics (prom-client's own go alongside). */
type MetricsMessage =
  /** worker → supervisor: prom-client's listener is in place, it can be asked */
  | { imageDump: 'metrics-ready' }
  /** worker → supervisor: gather the whole service's metrics for scrape `id` */
  | { imageDump: 'metrics-request', id: number }
  /** supervisor → worker: the gathered text, or why there is none */
  | { imageDump: 'metrics-answer', id: number, text?: string, error?: string }

function isMetricsMessage (message: unknown): message is MetricsMessage {
  return typeof message === 'object' && message !== null &&
    typeof (message as { imageDump?: unknown }).imageDump === 'string' &&
    (message as { imageDump: string }).imageDump.startsWith('metrics-')
}

/** The workers prom-client's clusterMetrics() asks: every one still connected. */
function connectedWorkers (): Worker[] {
  return Object.values(cluster.workers ?? {}).filter((worker): worker is Worker => worker !== undefined && worker.isConnected())
}

/**
 * In the supervisor: answers each worker's request for the whole service's metrics. Before
 * it asks, it waits (up to `timeoutMs`) until every connected worker has its prom-client
 * listener in place: a worker forked a moment ago would otherwise drop the question and
 * fail the scrape after prom-client's 5 s.
 */
export function gatherWorkersMetrics (options: { log: Logger, timeoutMs?: number }): void {
  const { log } = options
  const timeoutMs = options.timeoutMs ?? GATHER_TIMEOUT_MS
  const aggregator = new AggregatorRegistry()
  const ready = new Set<number>()
  let waiting: Array<() => void> = []

  const allReady = (): boolean => connectedWorkers().every((worker) => ready.has(worker.id))
  const wake = (): void => {
    if (!allReady()) return
    const woken = waiting
    waiting = []
    for (const resume of woken) resume()
  }
  async function untilAllReady (): Promise<void> {
    if (allReady()) return
    let timer: NodeJS.Timeout | undefined
    await new Promise<void>((resolve, reject) => {
      const resume = (): void => { clearTimeout(timer); resolve() }
      waiting.push(resume)
      timer = setTimeout(() => {
        waiting = waiting.filter((other) => other !== resume)
        const starting = connectedWorkers().filter((worker) => !ready.has(worker.id)).map((worker) => worker.id)
        reject(new Error(`workers ${starting.join(', ')} did not get ready to be asked within ${timeoutMs} ms`))
      }, timeoutMs)
    })
  }

  async function answer (worker: Worker, id: number): Promise<void> {
    let reply: MetricsMessage
    try {
      await untilAllReady()
      reply = { imageDump: 'metrics-answer', id, text: await aggregator.clusterMetrics() }
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      log.warn({ worker: worker.id, err: error }, 'gathering the workers\' metrics failed')
      reply = { imageDump: 'metrics-answer', id, error: message }
    }
    // a worker that died meanwhile is asked nothing more
    if (worker.isConnected()) worker.send(reply, (error: Error | null) => { if (error !== null) log.warn({ err: error, worker: worker.id }, 'sending a worker the metrics failed') })
  }

  cluster.on('message', (worker, message: unknown) => {
    if (!isMetricsMessage(message)) return
    if (message.imageDump === 'metrics-ready') {
      ready.add(worker.id)
      wake()
    } else if (message.imageDump === 'metrics-request') {
      void answer(worker, message.id)
    }
  })
  // a worker gone is no longer waited for
  const forget = (worker: Worker): void => { ready.delete(worker.id); wake() }
  cluster.on('disconnect', forget)
  cluster.on('exit', forget)
}

export interface WorkerMetrics {
  /** makes `registry` the one this worker answers the supervisor with (until then it answers with none: it has counted nothing) */
  share: (registry: Registry) => void
  /** the whole service's metrics, from the supervisor; rejects past `timeoutMs` or when they could not be gathered */
  gather: () => Promise<string>
}

/**
 * In a worker, as early as it can (before the app is built, so that a starting worker
 * answers at once, with nothing): puts prom-client's listener in place, tells the supervisor,
 * and returns how this worker shares its registry and asks for the whole service's.
 */
export function joinWorkersMetrics (options: { timeoutMs?: number } = {}): WorkerMetrics {
  const timeoutMs = options.timeoutMs ?? GATHER_TIMEOUT_MS
  if (process.send === undefined) throw new Error('joinWorkersMetrics: not a worker of a cluster (no IPC channel)')
  const send = process.send.bind(process)
  AggregatorRegistry.setRegistries([])
  // constructing one puts prom-client's worker-side listener in place (once per process)
  new AggregatorRegistry() // eslint-disable-line no-new
  send({ imageDump: 'metrics-ready' } satisfies MetricsMessage)

  let next = 0
  const pending = new Map<number, { resolve: (text: string) => void, reject: (error: Error) => void }>()
  process.on('message', (message: unknown) => {
    if (!isMetricsMessage(message) || message.imageDump !== 'metrics-answer') return
    const waiter = pending.get(message.id)
    if (waiter === undefined) return // given up on already
    pending.delete(message.id)
    if (message.text !== undefined) waiter.resolve(message.text)
    else waiter.reject(new Error(message.error ?? 'the supervisor sent no metrics'))
  })

  return {
    share: (registry) => AggregatorRegistry.setRegistries([registry]),
    gather: async () => {
      const id = next++
      let timer: NodeJS.Timeout | undefined
      try {
        return await new Promise<string>((resolve, reject) => {
          pending.set(id, { resolve, reject })
          timer = setTimeout(() => reject(new Error(`the supervisor did not send the workers' metrics within ${timeoutMs} ms`)), timeoutMs)
          send({ imageDump: 'metrics-request', id } satisfies MetricsMessage, undefined, {}, (error: Error | null) => { if (error !== null) reject(error) })
        })
      } finally {
        clearTimeout(timer)
        pending.delete(id)
      }
    }
  }
}
