/**
 * Prometheus metrics of one copy of the service, in a registry of its own (never
 * prom-client's global one): two apps in one process, or two copies of the service in one
 * host, count apart and never collide on a metric's name.
 *
 * Labels are few and bounded: statuses, outcomes, error codes, plans, route templates.
 * Never a user, a URL or a request id, which would make a series per value.
 *
 * What is counted comes from the other plugins' observers (dumps.observe,
 * imageFetcher.observe) and from the hooks `observeRoutes` puts on a scope of routes;
 * nothing else in the service knows about metrics.
 *
 * Each metric says how its samples are merged across workers (prom-client's `aggregator`,
 * used when the supervisor gathers them: lib/cluster-metrics.ts): counters, histograms and
 * the running dumps add up; what describes one process and is judged per process (the heap,
 * which load shedding compares with each worker's limit; the event loop's delay) is the
 * worst worker's; the resident memory adds up, as the machine has to hold it all.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { ImageResult } from '../schemas/dump.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** counted as a login (image_dump_logins_total) by the status of its answer */
    countsAsLogin?: boolean
  }
  interface FastifyInstance {
    imageDumpMetrics: Metrics
  }
}

/** The error code label of an image outcome: '' for a success, `HTTP_<status>` or the internal code for a failure. */
export function errorCodeOf (result: Pick<ImageResult, 'status' | 'error'>): string {
  const error = result.error
  if (result.status !== 'FAILURE' || error === undefined) return ''
  return error.type === 'HTTP_ERROR' ? `HTTP_${error.httpStatus}` : error.code
}

/** A login's outcome, by the status of its answer. */
function loginOutcome (statusCode: number): string {
  if (statusCode === 200) return 'success'
  if (statusCode === 401) return 'refused'
  if (statusCode === 429) return 'throttled'
  if (statusCode >= 500) return 'error'
  return 'invalid'
}

// download times from a fast local origin (ms) to the default deadline (30 s)
const DOWNLOAD_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
const REQUEST_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]

export interface MetricsOptions {
  /**
   * Where a scrape's text comes from instead of this app's registry: the whole service's,
   * gathered across the workers by their supervisor (lib/cluster-metrics.ts, set up by
   * server.ts). It rejects when they cannot be gathered in time; the scrape is then 503.
   */
  gather?: () => Promise<string>
}

export function createMetrics (fastify: FastifyInstance, options: MetricsOptions = {}) {
  const registry = new Registry()
  const registers = [registry]
  const name = (suffix: string): string => `image_dump_${suffix}`

  const dumps = new Counter({ name: name('dumps_total'), help: 'Dumps completed by this instance, by final status (SUCCESS, PARTIAL, FAILURE).', labelNames: ['status'], registers })
  const running = new Gauge({ name: name('dumps_running'), help: 'Dumps this instance is downloading now.', registers })
  const images = new Counter({
    name: name('images_total'),
    help: 'Image outcomes, by outcome (SUCCESS, FAILURE) and error code (HTTP_<status> or the internal code; empty for a success).',
    labelNames: ['outcome', 'error_code'],
    registers
  })
  const bytes = new Counter({ name: name('stored_bytes_total'), help: 'Bytes of the images stored.', registers })
  const reused = new Counter({ name: name('images_reused_total'), help: 'Images whose origin answered 304 to the validators of an earlier dump: their stored bytes reused, nothing downloaded.', registers })
  const downloads = new Histogram({
    name: name('download_duration_seconds'),
    help: 'Time of one image download from leaving the queue to its outcome, redirects and retries included, by outcome.',
    labelNames: ['outcome'],
    buckets: DOWNLOAD_BUCKETS,
    registers
  })
  const quotaRefusals = new Counter({ name: name('quota_refusals_total'), help: 'Dumps refused (429) because the plan\'s quota was used up, by plan.', labelNames: ['plan'], registers })
  const logins = new Counter({ name: name('logins_total'), help: 'Logins by outcome (success, refused, throttled, invalid, error).', labelNames: ['outcome'], registers })
  const shed = new Counter({ name: name('load_shed_total'), help: 'Requests answered 503 because the service was under pressure, by reason.', labelNames: ['reason'], registers })
  const requests = new Histogram({
    name: name('http_request_duration_seconds'),
    help: 'Requests answered, by method, route template and status code.',
    labelNames: ['method', 'route', 'status_code'],
    buckets: REQUEST_BUCKETS,
    registers
  })

  // Event-loop delay between two scrapes, as prom-client measures it, but owned by this
  // app: enabled while it runs, disabled when it closes (nothing left behind in a test run).
  const loop = monitorEventLoopDelay({ resolution: 10 })
  loop.enable()
  const seconds = (nanoseconds: number): number => Number.isFinite(nanoseconds) ? nanoseconds / 1e9 : 0
  new Gauge({ // eslint-disable-line no-new -- the registry holds it
    name: name('event_loop_delay_seconds'),
    // over workers, the latest worker's loop: an average would hide the one in trouble
    aggregator: 'max',
    help: 'Event-loop delay since the last scrape: median (percentile 50), 99th percentile, and the longest (percentile 100); over workers, the largest.',
    labelNames: ['percentile'],
    registers,
    collect () {
      this.set({ percentile: '50' }, seconds(loop.percentile(50)))
      this.set({ percentile: '99' }, seconds(loop.percentile(99)))
      this.set({ percentile: '100' }, seconds(loop.max))
      loop.reset()
    }
  })
  const gauge = (suffix: string, help: string, aggregator: 'max' | 'sum', read: () => number) => new Gauge({
    name: name(suffix),
    help,
    aggregator,
    registers,
    collect () { this.set(read()) }
  })
  // the heap is each process's own, and load shedding judges each against its own limit:
  // over workers, the fullest; the resident memory is what the machine holds: the total
  gauge('heap_used_bytes', 'V8 heap in use (over workers, the largest).', 'max', () => process.memoryUsage().heapUsed)
  gauge('resident_memory_bytes', 'Resident set size of the process (over workers, their total).', 'sum', () => process.memoryUsage.rss())

  const stopObserving = [
    fastify.dumps.observe({
      started: () => running.inc(),
      image: (_requestId, result, downloaded) => {
        images.inc({ outcome: result.status, error_code: errorCodeOf(result) })
        // a URL repeated in a dump is stored once, a reused image not again
        if (downloaded && result.status === 'SUCCESS' && result.bytes !== undefined) bytes.inc(result.bytes)
        if (result.reused === true) reused.inc()
      },
      ended: (_requestId, result) => {
        running.dec()
        if (result !== undefined) dumps.inc({ status: result.status })
      }
    }),
    fastify.imageFetcher.observe(({ outcome, seconds }) => downloads.observe({ outcome: outcome.status }, seconds))
  ]

  return {
    registry,

    /** Whether a scrape is the whole service's, gathered across workers (and may then fail). */
    gathered: options.gather !== undefined,

    /** The text of a scrape: this app's registry, or the whole service's when gathered. */
    async scrape (): Promise<{ contentType: string, text: string }> {
      const text = options.gather === undefined ? await registry.metrics() : await options.gather()
      return { contentType: registry.contentType, text }
    },

    /** Counts the requests of `scope` (an encapsulated scope of routes): logins, quota refusals, answers. */
    observeRoutes (scope: FastifyInstance): void {
      scope.addHook('onError', async (request: FastifyRequest, _reply: FastifyReply, error: FastifyError) => {
        // only an authenticated request reaches the quota
        if (error.code === 'QUOTA_EXCEEDED') quotaRefusals.inc({ plan: request.principal.plan })
      })
      scope.addHook('onResponse', async (request, reply) => {
        const route = request.routeOptions.url ?? 'unknown'
        requests.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000)
        if (request.routeOptions.config.countsAsLogin === true) logins.inc({ outcome: loginOutcome(reply.statusCode) })
      })
    },

    /** A request refused by load shedding, for `reason` ('event_loop_delay', 'heap_used'). */
    shed (reason: string): void {
      shed.inc({ reason })
    },

    close (): void {
      for (const stop of stopObserving) stop()
      loop.disable()
    }
  }
}

export type Metrics = ReturnType<typeof createMetrics>

async function metrics (fastify: FastifyInstance, options: MetricsOptions): Promise<void> {
  const service = createMetrics(fastify, options)
  fastify.decorate('imageDumpMetrics', service)
  fastify.addHook('onClose', async () => service.close())
}

export default fp(metrics, { name: 'image-dump-metrics', fastify: '5.x', dependencies: ['dumps', 'image-fetcher'] })
