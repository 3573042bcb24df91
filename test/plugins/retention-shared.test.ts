/**
 * Retention removes an expired dump the way DELETE does: the bytes a newer dump of the
 * same user also has stay, served by the newer dump; the rest of the expired dump goes.
 */
import t from 'tap'
import { sql } from 'kysely'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { makePng } from '../helpers/images.js'
import { filesUnder, postDump } from '../helpers/dumps.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: retention keeps the bytes a newer dump shares`, async (t) => {
    const { app, storageDir } = await buildTestApp(t, engine, { RETENTION_DAYS: '2' })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    const user = (await app.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const old = (await postDump(app, token, 'json', [{ name: 'Old', images: [origin.url('/png/801'), origin.url('/png/802')] }])).json()
    const recent = (await postDump(app, token, 'json', [{ name: 'New', images: [origin.url('/png/801?k=new')] }])).json()
    const aged = engine === 'mysql' ? sql`CURRENT_TIMESTAMP(3) - INTERVAL 3 DAY` : sql`strftime('%Y-%m-%d %H:%M:%f', 'now', '-3 days')`
    await app.persistence.db.updateTable('requests').set({ created_at: aged, heartbeat_at: aged } as never).where('id', '=', old.requestId).execute()

    t.same(await app.retention.sweep(), { removed: 1, takenElsewhere: 0 })
    t.equal((await app.inject({ method: 'GET', url: `/v1/dumps/${old.requestId}`, headers: auth })).statusCode, 404, 'the expired dump is gone')
    t.same(await filesUnder(storageDir), [`${user.userid}/${old.requestId}/1.png`], 'its unshared bytes went; the shared ones stay')
    const served = await app.inject({ method: 'GET', url: recent.items[0].images[0].location, headers: auth })
    t.equal(served.statusCode, 200, 'the newer dump still serves them')
    t.same(served.rawPayload, makePng(801))
  })
}
