/**
 * GET /metrics: after logins, a dump with successes and every kind of failure from a real
 * origin, and a dump past the quota, each counter has moved by exactly what happened; the
 * series carry no user or URL; METRICS_TOKEN guards the scrape; two apps in one process
 * count apart, and prom-client's global registry is never used; merged as the supervisor of
 * workers merges them, counters add up and each process's heap and event-loop delay do not.
 */
import t from 'tap'
import { AggregatorRegistry, register as globalRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { postDump } from '../helpers/dumps.js'
import { makeJpeg } from '../helpers/images.js'
import { startOrigin } from '../helpers/origin.js'
import { delta, parseMetrics, scrape, series } from '../helpers/metrics.js'
import { sha256Hex } from '../../lib/password.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(engine, async (t) => {
    t.test('the counters move by exactly what happened', async (t) => {
      const { app } = await buildTestApp(t, engine, { PLANS: 'gold=100,silver=50,bronze=1' })
      const before = await scrape(app)

      const refused = await app.inject({ method: 'POST', url: '/v1/auth/token', payload: { username: 'carol', passwordHash: sha256Hex('not her password') } })
      t.equal(refused.statusCode, 401)
      const token = await login(app, sampleUsers.bronze.username, sampleUsers.bronze.password)

      const jpeg = makeJpeg(3)
      const dump = await postDump(app, token, 'json', [
        { name: 'Stored', images: [origin.url('/png/1?bytes=1000'), origin.url('/png/2?bytes=2000'), origin.url('/jpeg/3')] },
        { name: 'Missing', images: [origin.url('/status/404?n=1'), origin.url('/status/404?n=2'), origin.url('/status/410')] },
        { name: 'Not images', images: [origin.url('/html'), 'not a url'] }
      ])
      t.equal(dump.statusCode, 200, dump.body.slice(0, 300))
      t.equal(dump.json().status, 'PARTIAL')
      const past = await postDump(app, token, 'json', [{ name: 'Past the quota', images: [origin.url('/png/4')] }])
      t.equal(past.statusCode, 429, 'the bronze plan here admits one dump')

      const after = await scrape(app)
      t.same(delta(before, after, 'image_dump_dumps_total'), { [series('image_dump_dumps_total', { status: 'PARTIAL' })]: 1 }, 'one PARTIAL dump')
      t.same(delta(before, after, 'image_dump_images_total'), {
        [series('image_dump_images_total', { outcome: 'SUCCESS', error_code: '' })]: 3,
        [series('image_dump_images_total', { outcome: 'FAILURE', error_code: 'HTTP_404' })]: 2,
        [series('image_dump_images_total', { outcome: 'FAILURE', error_code: 'HTTP_410' })]: 1,
        [series('image_dump_images_total', { outcome: 'FAILURE', error_code: 'NOT_AN_IMAGE' })]: 1,
        [series('image_dump_images_total', { outcome: 'FAILURE', error_code: 'INVALID_URL' })]: 1
      }, 'images by outcome and error code')
      t.same(delta(before, after, 'image_dump_stored_bytes_total'), { image_dump_stored_bytes_total: 1000 + 2000 + jpeg.length }, 'the bytes stored')
      // every download that reached the origin; the invalid URL never did
      t.same(delta(before, after, 'image_dump_download_duration_seconds_count'), {
        [series('image_dump_download_duration_seconds_count', { outcome: 'SUCCESS' })]: 3,
        [series('image_dump_download_duration_seconds_count', { outcome: 'FAILURE' })]: 4
      }, 'download times observed')
      const slowest = series('image_dump_download_duration_seconds_bucket', { outcome: 'SUCCESS', le: '+Inf' })
      t.equal((after.get(slowest) ?? 0) - (before.get(slowest) ?? 0), 3, 'in the histogram')
      t.same(delta(before, after, 'image_dump_quota_refusals_total'), { [series('image_dump_quota_refusals_total', { plan: 'bronze' })]: 1 }, 'one refusal by the quota')
      t.same(delta(before, after, 'image_dump_logins_total'), {
        [series('image_dump_logins_total', { outcome: 'refused' })]: 1,
        [series('image_dump_logins_total', { outcome: 'success' })]: 1
      }, 'logins by outcome')
      t.equal(after.get('image_dump_dumps_running'), 0, 'no dump running any more')
      t.equal(delta(before, after, 'image_dump_http_request_duration_seconds_count')[
        series('image_dump_http_request_duration_seconds_count', { method: 'POST', route: '/v1/dumps', status_code: '200' })], 1, 'requests by route template')
      for (const percentile of ['50', '99', '100']) {
        t.type(after.get(series('image_dump_event_loop_delay_seconds', { percentile })), 'number', `event-loop delay, percentile ${percentile}`)
      }
    })

    t.test('the exposition: its type, names, and no user or URL in a label', async (t) => {
      const { app } = await buildTestApp(t, engine)
      const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
      await postDump(app, token, 'xml', [{ name: 'Labels', images: [origin.url('/png/5'), origin.url('/status/404?secret=1')] }])
      const response = await app.inject({ method: 'GET', url: '/metrics', headers: { accept: 'application/xml' } })
      t.equal(response.statusCode, 200)
      t.match(response.headers['content-type'], /^text\/plain; version=0\.0\.4/, 'the Prometheus text format, whatever Accept says')
      const names = [...parseMetrics(response.body).keys()].map((key) => key.replace(/\{.*$/, ''))
      t.ok(names.length > 0 && names.every((name) => name.startsWith('image_dump_')), 'every name starts with image_dump_')
      for (const secret of [String(origin.port), 'secret', sampleUsers.gold.username, 'Labels']) {
        t.notOk(response.body.includes(secret), `nothing names ${secret}`)
      }
    })

    t.test('METRICS_TOKEN guards the scrape', async (t) => {
      const metricsToken = 'a-long-enough-scrape-token'
      const { app } = await buildTestApp(t, engine, { METRICS_TOKEN: metricsToken })
      for (const [what, authorization] of [['no token', undefined], ['a wrong token', 'Bearer a-long-enough-scrape-tokem'], ['a user token', `Bearer ${await login(app, 'alice', 'gold-password')}`]] as const) {
        const response = await app.inject({ method: 'GET', url: '/metrics', headers: authorization === undefined ? {} : { authorization } })
        t.equal(response.statusCode, 401, what)
        t.equal(response.headers['www-authenticate'], 'Bearer', `${what}: how to authenticate`)
      }
      t.ok((await scrape(app, { authorization: `Bearer ${metricsToken}` })).size > 0, 'the token opens it')
      const health = await app.inject({ method: 'GET', url: '/health' })
      t.equal(health.statusCode, 200, 'and guards nothing else')
    })

    t.test('two apps in one process count apart, in registries of their own', async (t) => {
      const a = await buildTestApp(t, engine)
      const b = await buildTestApp(t, engine)
      const beforeB = await scrape(b.app)
      const token = await login(a.app, 'alice', 'gold-password')
      t.equal((await postDump(a.app, token, 'json', [{ name: 'A only', images: [origin.url('/png/6')] }])).statusCode, 200)
      const afterA = await scrape(a.app)
      t.equal(afterA.get(series('image_dump_images_total', { outcome: 'SUCCESS', error_code: '' })), 1, 'counted in A')
      t.same(delta(beforeB, await scrape(b.app), 'image_dump_images_total'), {}, 'not in B')
      t.equal(globalRegistry.getMetricsAsArray().length, 0, "prom-client's global registry holds nothing")
    })

    t.test('merged over processes (as with workers): counts and memory add up, the heap and the event-loop delay are the largest', async (t) => {
      const a = await buildTestApp(t, engine)
      const b = await buildTestApp(t, engine)
      const token = await login(a.app, 'alice', 'gold-password')
      t.equal((await postDump(a.app, token, 'json', [{ name: 'A', images: [origin.url('/png/7')] }])).statusCode, 200)
      const tokenB = await login(b.app, 'bob', 'silver-password')
      t.equal((await postDump(b.app, tokenB, 'json', [{ name: 'B', images: [origin.url('/png/8'), origin.url('/png/9')] }])).statusCode, 200)
      // what each process sends its supervisor, and what the supervisor makes of them
      const sent = [await a.app.imageDumpMetrics.registry.getMetricsAsJSON(), await b.app.imageDumpMetrics.registry.getMetricsAsJSON()]
      const merged = parseMetrics(await AggregatorRegistry.aggregate(sent).metrics())
      const value = (metrics: MetricObjectWithValues<MetricValue<string>>[], name: string, labels: Record<string, string> = {}): number =>
        metrics.find((m) => m.name === name)!.values.find((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l))!.value
      const [ofA, ofB] = sent as [typeof sent[0], typeof sent[0]]
      const success = { outcome: 'SUCCESS', error_code: '' }
      t.equal(merged.get(series('image_dump_images_total', success)), 3, 'images: 1 + 2')
      t.equal(merged.get('image_dump_resident_memory_bytes'), value(ofA, 'image_dump_resident_memory_bytes') + value(ofB, 'image_dump_resident_memory_bytes'), 'resident memory: the total')
      t.equal(merged.get('image_dump_heap_used_bytes'), Math.max(value(ofA, 'image_dump_heap_used_bytes'), value(ofB, 'image_dump_heap_used_bytes')), 'heap: the largest')
      for (const percentile of ['50', '99', '100']) {
        const of = (metrics: typeof ofA) => value(metrics, 'image_dump_event_loop_delay_seconds', { percentile })
        t.equal(merged.get(series('image_dump_event_loop_delay_seconds', { percentile })), Math.max(of(ofA), of(ofB)), `event-loop delay, percentile ${percentile}: the largest`)
      }
      t.equal(merged.get(series('image_dump_http_request_duration_seconds_count', { method: 'POST', route: '/v1/dumps', status_code: '200' })), 2, 'a histogram: counts add up')
    })
  })
}
