import t from 'tap'
import { join } from 'node:path'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { filesUnder, postDump } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'

// Fault: an instance is cut off from the database for longer than RECOVERY_STALE_MS while
// one of its dumps downloads, and another instance, seeing no heartbeat, completes that
// dump as interrupted and removes its files. When the first instance finishes, the record
// that was already written must stand: it may not be overwritten with outcomes whose files
// are gone, and the first instance's own files must not outlive it.

const origin = await startOrigin()
t.teardown(() => origin.close())

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: a dump recovered by another instance while it was still downloading`, async (t) => {
    const { app: a, database, storageDir } = await buildTestApp(t, engine)
    const token = await login(a, sampleUsers.gold.username, sampleUsers.gold.password)
    const { userid } = (await a.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const key = `stale-${engine}`
    origin.resetCounters()
    const inFlight = postDump(a, token, 'json', [{ name: 'cut off', images: [origin.url('/png/1'), origin.url(`/held/${key}/png/2`)] }])
    await origin.waitForRequests(2)
    const row = await a.persistence.db.selectFrom('requests').select('id').where('status', '=', 0).executeTakeFirstOrThrow()

    // The other instance: same database, same storage. What its sweep does once the
    // heartbeat is stale is forced here, since this process cannot cut one app off alone.
    const { app: b } = await buildTestApp(t, engine, { STORAGE_DIR: storageDir }, database)
    await b.dumps.recoverInterrupted(0)
    const recovered = await b.persistence.db.selectFrom('requests').select(['status', 'data']).where('id', '=', row.id).executeTakeFirstOrThrow()
    t.equal(Number(recovered.status), 1, 'the other instance completed the row')

    origin.release(key)
    const response = await inFlight
    t.equal(response.statusCode, 503, 'the first instance does not claim a success it cannot back')
    t.match(response.json().message, new RegExp(`^dump ${row.id} was marked as interrupted while its images were downloading`))
    const after = await a.persistence.db.selectFrom('requests').select(['status', 'data']).where('id', '=', row.id).executeTakeFirstOrThrow()
    t.same(Buffer.from(after.data!), Buffer.from(recovered.data!), 'the INTERRUPTED record stands, not overwritten')
    t.match(Buffer.from(after.data!).toString(), /"code":"INTERRUPTED"/)
    t.same(await filesUnder(join(storageDir, String(userid), String(row.id))), [], 'and no file of that dump remains')
  })
}
