import t from 'tap'
import { defaultWorkers, defaults, loadConfig } from '../config.js'

t.test('an empty environment gives the documented defaults', async (t) => {
  t.same(loadConfig({}), defaults)
  t.equal(loadConfig({}).tokenExpirySeconds, 1200, 'tokens last 20 minutes by default')
  t.same(loadConfig({}).plans, { gold: 100, silver: 50, bronze: 25 })
})

t.test('every variable is read and converted', async (t) => {
  const config = loadConfig({
    PORT: '8080',
    HOST: '0.0.0.0',
    DATABASE_URL: 'mysql://u:p@db:3306/x',
    STORAGE_DIR: '/srv/img',
    USERS_FILE: '/etc/users.txt',
    TOKEN_EXPIRY: '60',
    ALLOW_PRIVATE_NETWORKS: 'true',
    DOWNLOAD_TIMEOUT_MS: '5000',
    DOWNLOAD_CONCURRENCY: '8',
    DOWNLOAD_PER_HOST: '4',
    DOWNLOAD_MEMORY_BYTES: '1048576',
    MAX_IMAGE_BYTES: '1000',
    MAX_ITEMS: '10',
    MAX_IMAGES: '20',
    BODY_LIMIT_BYTES: '2048',
    LOG_LEVEL: 'warn',
    PLANS: 'gold=3,free=1'
  })
  t.match(config, {
    port: 8080,
    host: '0.0.0.0',
    databaseUrl: 'mysql://u:p@db:3306/x',
    storageDir: '/srv/img',
    usersFile: '/etc/users.txt',
    tokenExpirySeconds: 60,
    allowPrivateNetworks: true,
    downloadTimeoutMs: 5000,
    downloadConcurrency: 8,
    downloadPerHost: 4,
    downloadMemoryBytes: 1048576,
    maxImageBytes: 1000,
    maxItems: 10,
    maxImages: 20,
    bodyLimitBytes: 2048,
    logLevel: 'warn'
  })
  t.same({ ...config.plans }, { gold: 3, free: 1 })
})

t.test('a bad value stops the start, naming the variable and what was expected', async (t) => {
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ PORT: 'http' }, /^PORT="http" is invalid: expected a TCP port number/],
    [{ PORT: '70000' }, /^PORT="70000" is invalid/],
    [{ TOKEN_EXPIRY: '-5' }, /^TOKEN_EXPIRY="-5" is invalid: expected a positive number of seconds/],
    [{ TOKEN_EXPIRY: '20m' }, /^TOKEN_EXPIRY="20m" is invalid/],
    [{ DATABASE_URL: 'postgres://x' }, /^DATABASE_URL="postgres:\/\/x" is invalid: expected mysql:\/\//],
    [{ ALLOW_PRIVATE_NETWORKS: 'yes' }, /^ALLOW_PRIVATE_NETWORKS="yes" is invalid: expected 'true' or 'false'/],
    [{ DOWNLOAD_CONCURRENCY: '0' }, /^DOWNLOAD_CONCURRENCY="0" is invalid: expected a positive integer/],
    [{ MAX_IMAGE_BYTES: '1e6' }, /^MAX_IMAGE_BYTES="1e6" is invalid/],
    [{ DOWNLOAD_MEMORY_BYTES: '0' }, /^DOWNLOAD_MEMORY_BYTES="0" is invalid: expected a positive number of bytes/],
    [{ DOWNLOAD_MEMORY_BYTES: '16M' }, /^DOWNLOAD_MEMORY_BYTES="16M" is invalid/],
    [{ LOG_LEVEL: 'verbose' }, /^LOG_LEVEL="verbose" is invalid: expected one of fatal/],
    [{ PLANS: 'gold:100' }, /^PLANS="gold:100" is invalid: expected plan=limit pairs/]
  ]
  for (const [env, message] of cases) {
    t.throws(() => loadConfig(env), { name: 'ConfigError', message }, JSON.stringify(env))
  }
})

t.test('the per-host limit follows DOWNLOAD_CONCURRENCY unless set', async (t) => {
  t.equal(loadConfig({}).downloadPerHost, 256)
  t.equal(loadConfig({ DOWNLOAD_CONCURRENCY: '200' }).downloadPerHost, 200)
  t.equal(loadConfig({ DOWNLOAD_CONCURRENCY: '200', DOWNLOAD_PER_HOST: '8' }).downloadPerHost, 8)
})

t.test('an empty variable counts as unset', async (t) => {
  t.equal(loadConfig({ PORT: '' }).port, 3000)
})

t.test('RETENTION_DAYS: unset keeps everything; a whole number of days, at least one', async (t) => {
  t.equal(loadConfig({}).retentionDays, null, 'keep everything by default')
  t.equal(loadConfig({ RETENTION_DAYS: '30' }).retentionDays, 30)
  for (const bad of ['0', '-1', '1.5', '0.04', '30d', '1000000']) {
    t.throws(() => loadConfig({ RETENTION_DAYS: bad }), { name: 'ConfigError', message: /^RETENTION_DAYS=.* is invalid: expected a whole number of days, at least 1/ }, `${bad} is refused`)
  }
})

t.test('STORAGE_URL: unset, images go to the folder STORAGE_DIR; set, it says where they go', async (t) => {
  t.same(loadConfig({}).storage, { kind: 'file', dir: './data/images' }, 'the default folder')
  t.same(loadConfig({ STORAGE_DIR: '/srv/img' }).storage, { kind: 'file', dir: '/srv/img' })
  t.same(loadConfig({ STORAGE_URL: 'file:/srv/other', STORAGE_DIR: '/srv/img' }).storage, { kind: 'file', dir: '/srv/other' }, 'STORAGE_URL wins over STORAGE_DIR')
  t.same(loadConfig({ STORAGE_URL: 's3://images/prod?endpoint=http://minio:9000&region=us-east-1' }).storage,
    { kind: 's3', bucket: 'images', prefix: 'prod', endpoint: 'http://minio:9000', region: 'us-east-1' })
  t.equal(loadConfig({ STORAGE_URL: '' }).storage.kind, 'file', 'an empty STORAGE_URL counts as unset')
  t.throws(() => loadConfig({ STORAGE_URL: 's3://key:secret@images/prod' }),
    { name: 'ConfigError', message: /^STORAGE_URL="s3:\/\/…@images\/prod" is invalid: credentials do not go in the URL/ }, 'refused, without printing the secret back')
  t.throws(() => loadConfig({ STORAGE_URL: 'gs://images' }), { name: 'ConfigError', message: /^STORAGE_URL="gs:\/\/images" is invalid: the scheme "gs:" is not supported/ })
})

t.test('WORKERS: one process per core but one by default, at least 1, at most 8; any number from 1 to 64 when set', async (t) => {
  const { availableParallelism } = await import('node:os')
  t.equal(loadConfig({}).workers, Math.max(1, Math.min(availableParallelism() - 1, 8)), `${availableParallelism()} cores here`)
  t.same([1, 2, 3, 4, 9, 16, 64].map(defaultWorkers), [1, 1, 2, 3, 8, 8, 8], 'by cores: 1, 2, 3, 4, 9, 16, 64')
  t.equal(loadConfig({ WORKERS: '1' }).workers, 1, 'one: the single process, no supervisor')
  t.equal(loadConfig({ WORKERS: '16' }).workers, 16, 'past the default cap when asked for')
  t.equal(loadConfig({ WORKERS: '64' }).workers, 64)
  for (const bad of ['0', '65', '-1', '1.5', 'auto', '08']) {
    t.throws(() => loadConfig({ WORKERS: bad }), { name: 'ConfigError', message: /^WORKERS=.* is invalid: expected a number of processes from 1 to 64/ }, `${bad} is refused`)
  }
})
