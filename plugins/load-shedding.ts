/**
 * Load shedding with @fastify/under-pressure: while the event loop is late or the heap
 * is past its limit (Config.loadShedding; sampled every second), the routes of the scope
 * it is registered in (fp: the registering scope itself) are answered 503 with
 * Retry-After, in the client's format, before any work is done. Not by the number of
 * requests in flight: a dump is one long request, and many of them wait on the network,
 * costing the process little.
 *
 * A route with `config: { shedLoad: false }` is always answered: health and metrics must
 * stay readable when the service is under pressure, which is when they are wanted.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify'
import type { Config } from '../config.js'
import { createServiceError } from '../lib/errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: this route is answered even while the service sheds load */
    shedLoad?: boolean
  }
}

export class OverloadedError extends createServiceError('OVERLOADED', 503, 'the service is overloaded right now; try again after the time in Retry-After') {
  constructor (message: string, readonly headers: Record<string, string>) {
    super(message)
  }
}

const REASONS: Readonly<Record<string, string>> = {
  // the delay check is under-pressure's health check (createDelayCheck)
  healthCheck: 'event_loop_delay',
  heapUsedBytes: 'heap_used'
}

export interface LoadSheddingOptions {
  limits: Config['loadShedding']
  /** told of every request shed, with the reason */
  onShed?: (reason: string) => void
}

/** Whether a route of a scope with load shedding can be answered 503 by it. */
export function shedsLoad (limits: Config['loadShedding'], route: Pick<RouteOptions, 'config'>): boolean {
  return (limits.maxEventLoopDelayMs > 0 || limits.maxHeapUsedBytes > 0) && route.config?.shedLoad !== false
}

/** Fewer timer ticks than this in a window: too few to tell a late loop from a few long tasks. */
const MIN_TICKS = 3
const RESOLUTION_MS = 10

/**
 * The event-loop check, run as under-pressure's health check every `windowMs`: late when
 * the median lateness of the timer ticks of that window is past the limit, that is, when
 * the loop was late for most of it. Not under-pressure's own check, which takes the mean
 * over one second and takes a second without a tick as an endless delay: one long task (a
 * 16 MiB body parsed on a busy machine) would then shed every request of the next second.
 */
function createDelayCheck (maxDelayMs: number) {
  const monitor = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  monitor.enable()
  return {
    check: async (): Promise<boolean> => {
      const late = monitor.count >= MIN_TICKS && monitor.percentile(50) / 1e6 - RESOLUTION_MS > maxDelayMs
      monitor.reset()
      return !late
    },
    close: () => monitor.disable()
  }
}

async function loadShedding (fastify: FastifyInstance, { limits, onShed }: LoadSheddingOptions): Promise<void> {
  const retryAfter = String(limits.retryAfterSeconds)
  const delay = limits.maxEventLoopDelayMs > 0 ? createDelayCheck(limits.maxEventLoopDelayMs) : undefined
  if (delay !== undefined) fastify.addHook('onClose', async () => delay.close())
  await fastify.register(underPressure, {
    ...(delay === undefined ? {} : { healthCheck: delay.check, healthCheckInterval: limits.delayWindowMs }),
    maxHeapUsedBytes: limits.maxHeapUsedBytes,
    sampleInterval: limits.sampleIntervalMs,
    retryAfter: limits.retryAfterSeconds,
    // undefined lets the request through (under-pressure's contract); a rejection is the answer
    pressureHandler: async (request: FastifyRequest, _reply: unknown, type: string, value: number | undefined) => {
      if (request.routeOptions.config.shedLoad === false) return
      const reason = REASONS[type] ?? type
      onShed?.(reason)
      throw new OverloadedError(`shed: ${reason} is ${String(value)}`, { 'retry-after': retryAfter })
    }
  })
}

export default fp(loadShedding, { name: 'image-dump-load-shedding', fastify: '5.x' })
