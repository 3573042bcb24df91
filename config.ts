import { availableParallelism } from 'node:os'
import { getHeapStatistics } from 'node:v8'
import Type, { type Static } from 'typebox'
import Value from 'typebox/value'
import { StorageUrlError, parseStorageUrl, type StorageLocation } from './lib/object-store/storage-url.js'

/**
 * The environment the service reads, as typebox sees it: every value is a string, so
 * numbers and booleans are described by pattern and converted after validation. The
 * description of each property is what an operator is told when the value is wrong.
 */
export const EnvSchema = Type.Object({
  PORT: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$', description: 'a TCP port number (0-65535)' })),
  HOST: Type.Optional(Type.String({ minLength: 1, description: 'a host name or address to listen on' })),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^(mysql://.+|sqlite:.+)$', description: 'mysql://user:pass@host:port/db or sqlite:<path>' })),
  STORAGE_DIR: Type.Optional(Type.String({ minLength: 1, description: 'a directory path' })),
  // checked further by parseStorageUrl, whose message names the problem
  STORAGE_URL: Type.Optional(Type.String({ minLength: 1, description: 'file:<dir>, a directory path, or s3://<bucket>/<prefix>?endpoint=<url>&region=<r>' })),
  USERS_FILE: Type.Optional(Type.String({ minLength: 1, description: 'a file path' })),
  TOKEN_EXPIRY: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,7}$', description: 'a positive number of seconds' })),
  ALLOW_PRIVATE_NETWORKS: Type.Optional(Type.Enum(['true', 'false'], { description: "'true' or 'false'" })),
  DOWNLOAD_TIMEOUT_MS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,8}$', description: 'a positive number of milliseconds' })),
  DOWNLOAD_CONCURRENCY: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,4}$', description: 'a positive integer' })),
  DOWNLOAD_PER_HOST: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,4}$', description: 'a positive integer' })),
  DOWNLOAD_MEMORY_BYTES: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,11}$', description: 'a positive number of bytes' })),
  MAX_IMAGE_BYTES: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,11}$', description: 'a positive number of bytes' })),
  MAX_ITEMS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,6}$', description: 'a positive integer' })),
  MAX_IMAGES: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,6}$', description: 'a positive integer' })),
  BODY_LIMIT_BYTES: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,10}$', description: 'a positive number of bytes' })),
  LOG_LEVEL: Type.Optional(Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    { description: 'one of fatal, error, warn, info, debug, trace, silent' })),
  PLANS: Type.Optional(Type.String({ pattern: '^[a-z][a-z0-9_-]*=[0-9]+(,[a-z][a-z0-9_-]*=[0-9]+)*$', description: 'plan=limit pairs, e.g. gold=100,silver=50,bronze=25' })),
  SHUTDOWN_GRACE_MS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{2,8}$', description: 'a number of milliseconds, at least 100' })),
  REQUEST_TIMEOUT_MS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{3,8}$', description: 'a number of milliseconds, at least 1000' })),
  BODY_MIN_BYTES_PER_SECOND: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,9}$', description: 'a positive number of bytes per second' })),
  // Below a second the heartbeat (a quarter of it) would hammer the database for little gain.
  RECOVERY_STALE_MS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{3,8}$', description: 'a number of milliseconds, at least 1000' })),
  // a bearer token: visible ASCII, long enough not to be guessed
  METRICS_TOKEN: Type.Optional(Type.String({ pattern: '^[\\x21-\\x7E]{16,256}$', description: '16 to 256 visible ASCII characters' })),
  MAX_EVENT_LOOP_DELAY_MS: Type.Optional(Type.String({ pattern: '^[0-9]{1,6}$', description: 'a number of milliseconds (0 turns the check off)' })),
  MAX_HEAP_USED_BYTES: Type.Optional(Type.String({ pattern: '^[0-9]{1,13}$', description: 'a number of bytes (0 turns the check off)' })),
  // Each open events stream of a running dump reads the database this often: below 100 ms
  // a few hundred streams would be a load of their own.
  EVENTS_POLL_MS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{2,6}$', description: 'a number of milliseconds, at least 100' })),
  EVENTS_MAX_STREAMS_PER_USER: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,3}$', description: 'a positive integer' })),
  // At least a day: never into the quota's hour, nor the 24 h an idempotency key names its dump.
  WORKERS: Type.Optional(Type.String({ pattern: '^([1-9]|[1-5][0-9]|6[0-4])$', description: 'a number of processes from 1 to 64' })),
  RETENTION_DAYS: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,5}$', description: 'a whole number of days, at least 1 (unset: keep everything)' }))
})

export interface Config {
  port: number
  host: string
  databaseUrl: string
  storageDir: string
  /** where stored images live: STORAGE_URL when set, else the folder STORAGE_DIR */
  storage: StorageLocation
  usersFile: string
  tokenExpirySeconds: number
  allowPrivateNetworks: boolean
  downloadTimeoutMs: number
  downloadConcurrency: number
  downloadPerHost: number
  /** bytes of responses the downloads in flight may hold in memory between them (plugins/image-fetcher.ts) */
  downloadMemoryBytes: number
  maxImageBytes: number
  maxItems: number
  maxImages: number
  bodyLimitBytes: number
  /** longest a client may take to send a whole request, headers and body (not the answer) */
  requestTimeoutMs: number
  /** slowest a request body may arrive, on average over 10 s windows */
  bodyMinBytesPerSecond: number
  /** how long a stop waits for in-flight requests before the process exits anyway */
  shutdownGraceMs: number
  logLevel: string
  /** dumps admitted per rolling hour, by plan name */
  plans: Record<string, number>
  /**
   * MySQL: an incomplete dump whose instance has not marked it alive for this long is
   * taken as left behind by a stopped instance and resumed, by any instance
   */
  recoveryStaleMs: number
  /** when set, GET /metrics requires it as a Bearer token */
  metricsToken?: string
  /** Load shedding (@fastify/under-pressure): API requests are answered 503 + Retry-After while a limit is passed; 0 turns a check off. */
  loadShedding: {
    /** median lateness of the event loop's timer ticks over the last delayWindowMs */
    maxEventLoopDelayMs: number
    /** V8 heap in use */
    maxHeapUsedBytes: number
    /** how often the heap is sampled */
    sampleIntervalMs: number
    /** the window the event-loop delay is judged over, and how often */
    delayWindowMs: number
    /** the Retry-After of a shed request, in seconds */
    retryAfterSeconds: number
  }
  /** how often an events stream looks for new outcomes of a dump running on another instance */
  eventsPollMs: number
  /** events streams one user may hold open on one instance */
  eventsMaxStreamsPerUser: number
  /** dumps admitted longer ago than this are removed, records and files; null keeps everything */
  retentionDays: number | null
  /**
   * Processes serving requests, sharing the port (server.ts, lib/worker-supervisor.ts); 1
   * runs the service in the one process started, with no supervisor
   */
  workers: number
}

/**
 * The default of WORKERS: one per core but one, at least 1, at most 8. The core left over
 * is the database's, the kernel's network and disk work's and the supervisor's: on two
 * cores, two workers did not download faster than one process and took a fifth more CPU
 * per image (BENCHMARKS.md, Workers), and a supervisor with two workers holds about twice
 * the memory of one process, past the P3 budget. Past 8 a process per core buys little:
 * every worker writes to the one database (on SQLite one writer at a time for all of
 * them), and each holds its own download budget and some 60 MiB of its own.
 */
export const MAX_DEFAULT_WORKERS = 8

export function defaultWorkers (cores: number): number {
  return Math.max(1, Math.min(cores - 1, MAX_DEFAULT_WORKERS))
}

export const defaults: Config = {
  port: 3000,
  host: '127.0.0.1',
  databaseUrl: 'sqlite:./data/image-dump.db',
  storageDir: './data/images',
  storage: { kind: 'file', dir: './data/images' },
  usersFile: './users.txt',
  tokenExpirySeconds: 1200,
  allowPrivateNetworks: false,
  downloadTimeoutMs: 30_000,
  // Memory, not this count, limits large images (downloadMemoryBytes); the count only has to
  // be high enough that slow small images from one origin do not wait in waves (P2).
  downloadConcurrency: 256,
  // the same as downloadConcurrency; an unset DOWNLOAD_PER_HOST follows DOWNLOAD_CONCURRENCY
  downloadPerHost: 256,
  // BENCHMARKS.md, Knobs: what more or less costs in memory and time
  // BENCHMARKS.md, Knobs: what more or less costs in memory and time
  downloadMemoryBytes: 4 * 1024 * 1024,
  maxImageBytes: 25 * 1024 * 1024,
  maxItems: 5_000,
  maxImages: 20_000,
  bodyLimitBytes: 16 * 1024 * 1024,
  // a 16 MiB feed needs 140 KB/s to arrive within it; the rate below is the real guard
  requestTimeoutMs: 120_000,
  bodyMinBytesPerSecond: 8192,
  // below the 30 s most process managers wait before SIGKILL, so the stop stays ours
  shutdownGraceMs: 25_000,
  logLevel: 'info',
  plans: { gold: 100, silver: 50, bronze: 25 },
  recoveryStaleMs: 60_000,
  loadShedding: {
    // most ticks a second late for five seconds: the loop is saturated, far past what a busy
    // machine shows (tens of ms), so only a process that cannot keep up sheds
    maxEventLoopDelayMs: 1000,
    // 90 % of the heap V8 may grow to (--max-old-space-size): past it, collection takes over
    maxHeapUsedBytes: Math.floor(getHeapStatistics().heap_size_limit * 0.9),
    sampleIntervalMs: 1000,
    delayWindowMs: 5000,
    retryAfterSeconds: 10
  },
  eventsPollMs: 1000,
  eventsMaxStreamsPerUser: 8,
  retentionDays: null,
  workers: defaultWorkers(availableParallelism())
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

export function parsePlans (text: string): Record<string, number> {
  const plans: Record<string, number> = Object.create(null)
  for (const pair of text.split(',')) {
    const [name, limit] = pair.split('=') as [string, string]
    plans[name] = Number(limit)
  }
  return plans
}

function storageOf (url: string | undefined, dir: string): StorageLocation {
  if (url === undefined) return { kind: 'file', dir }
  try {
    return parseStorageUrl(url)
  } catch (err) {
    // credentials put in the URL by mistake are not printed back
    if (err instanceof StorageUrlError) throw new ConfigError(`STORAGE_URL=${JSON.stringify(url.replace(/\/\/[^/?#]*@/, '//…@'))} is invalid: ${err.message}`)
    throw err
  }
}

/**
 * Reads the configuration from an environment. Throws a ConfigError naming the first
 * bad variable and what was expected, so a mistyped value stops the start instead of
 * silently falling back to a default.
 */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  const known: Record<string, string> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = env[key]
    if (value !== undefined && value !== '') known[key] = value
  }
  const errors = Value.Errors(EnvSchema, known)
  if (errors.length > 0) {
    const first = errors[0]!
    const name = first.instancePath.replace(/^\//, '')
    const schema = (EnvSchema.properties as Record<string, { description?: string }>)[name]
    throw new ConfigError(`${name}=${JSON.stringify(known[name])} is invalid: expected ${schema?.description ?? first.message}`)
  }
  const e = known as Static<typeof EnvSchema>
  const int = (name: keyof typeof e, fallback: number): number => (e[name] === undefined ? fallback : Number(e[name]))
  const config: Config = {
    port: int('PORT', defaults.port),
    host: e.HOST ?? defaults.host,
    databaseUrl: e.DATABASE_URL ?? defaults.databaseUrl,
    storageDir: e.STORAGE_DIR ?? defaults.storageDir,
    storage: storageOf(e.STORAGE_URL, e.STORAGE_DIR ?? defaults.storageDir),
    usersFile: e.USERS_FILE ?? defaults.usersFile,
    tokenExpirySeconds: int('TOKEN_EXPIRY', defaults.tokenExpirySeconds),
    allowPrivateNetworks: e.ALLOW_PRIVATE_NETWORKS === 'true',
    downloadTimeoutMs: int('DOWNLOAD_TIMEOUT_MS', defaults.downloadTimeoutMs),
    downloadConcurrency: int('DOWNLOAD_CONCURRENCY', defaults.downloadConcurrency),
    // Unset, the per-host limit follows DOWNLOAD_CONCURRENCY, so it is not the binding limit
    // when a whole batch comes from one CDN (BENCHMARKS.md, P1 and P2).
    downloadPerHost: int('DOWNLOAD_PER_HOST', e.DOWNLOAD_CONCURRENCY === undefined ? defaults.downloadPerHost : int('DOWNLOAD_CONCURRENCY', 0)),
    downloadMemoryBytes: int('DOWNLOAD_MEMORY_BYTES', defaults.downloadMemoryBytes),
    maxImageBytes: int('MAX_IMAGE_BYTES', defaults.maxImageBytes),
    maxItems: int('MAX_ITEMS', defaults.maxItems),
    maxImages: int('MAX_IMAGES', defaults.maxImages),
    bodyLimitBytes: int('BODY_LIMIT_BYTES', defaults.bodyLimitBytes),
    requestTimeoutMs: int('REQUEST_TIMEOUT_MS', defaults.requestTimeoutMs),
    bodyMinBytesPerSecond: int('BODY_MIN_BYTES_PER_SECOND', defaults.bodyMinBytesPerSecond),
    shutdownGraceMs: int('SHUTDOWN_GRACE_MS', defaults.shutdownGraceMs),
    logLevel: e.LOG_LEVEL ?? defaults.logLevel,
    plans: e.PLANS === undefined ? { ...defaults.plans } : parsePlans(e.PLANS),
    recoveryStaleMs: int('RECOVERY_STALE_MS', defaults.recoveryStaleMs),
    ...(e.METRICS_TOKEN === undefined ? {} : { metricsToken: e.METRICS_TOKEN }),
    loadShedding: {
      ...defaults.loadShedding,
      maxEventLoopDelayMs: int('MAX_EVENT_LOOP_DELAY_MS', defaults.loadShedding.maxEventLoopDelayMs),
      maxHeapUsedBytes: int('MAX_HEAP_USED_BYTES', defaults.loadShedding.maxHeapUsedBytes)
    },
    eventsPollMs: int('EVENTS_POLL_MS', defaults.eventsPollMs),
    eventsMaxStreamsPerUser: int('EVENTS_MAX_STREAMS_PER_USER', defaults.eventsMaxStreamsPerUser),
    retentionDays: e.RETENTION_DAYS === undefined ? defaults.retentionDays : Number(e.RETENTION_DAYS),
    workers: int('WORKERS', defaults.workers)
  }
  if (config.port > 65535) throw new ConfigError(`PORT=${JSON.stringify(e.PORT)} is invalid: expected a TCP port number (0-65535)`)
  return config
}
