import t from 'tap'
import { buildTestApp } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: GET /health`, async (t) => {
    const { app } = await buildTestApp(t, engine)
    const up = await app.inject({ method: 'GET', url: '/health' })
    t.equal(up.statusCode, 200)
    t.same(up.json(), { status: 'ok', database: 'reachable' })

    await app.db.destroy()
    const down = await app.inject({ method: 'GET', url: '/health' })
    t.equal(down.statusCode, 503, 'without its database the service says it is not ready')
    t.equal(down.json().status, 'unavailable')
    t.match(down.json().database, /^database unreachable: /)
  })
}
