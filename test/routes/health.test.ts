import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: GET /health`, async (t) => {
    const logs: string[] = []
    const { app } = await buildTestApp(t, engine, { LOG_LEVEL: 'info' }, undefined, { logger: { level: 'info', stream: { write: (line: string) => { logs.push(line) } } } })
    const up = await app.inject({ method: 'GET', url: '/health' })
    t.equal(up.statusCode, 200)
    t.same(up.json(), { status: 'ok', database: 'reachable' })

    await app.persistence.db.destroy()
    const down = await app.inject({ method: 'GET', url: '/health' })
    t.equal(down.statusCode, 503, 'without its database the service says it is not ready')
    t.equal(down.json().status, 'unavailable')
    t.same(down.json(), { status: 'unavailable', database: 'unreachable' }, 'the public answer names no host, port or driver error')
    t.ok(logs.some((line) => line.includes('health check: database unreachable') && line.includes('database unreachable: ')),
      'the reason is in the log for the operator')
  })
}
