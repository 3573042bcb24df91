import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { filesUnder, postDump } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'

// Fault: an instance's heartbeat is found stale while one of its dumps is still
// downloading (it was cut off from the database for longer than RECOVERY_STALE_MS), and
// another instance takes the dump over and resumes it. The two must never both write it:
// the first one stops as soon as it learns (at its next heartbeat or recorded batch) and
// records nothing more; the second keeps what was recorded and downloads the rest; the
// record and the files agree at the end.

const origin = await startOrigin()
t.teardown(() => origin.close())
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex')

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: a dump taken over by another instance while it was still downloading`, async (t) => {
    const { app: a, database, storageDir } = await buildTestApp(t, engine)
    const token = await login(a, sampleUsers.gold.username, sampleUsers.gold.password)
    const { userid } = (await a.imageDumpUsers.findByUsername(sampleUsers.gold.username))!
    const key = `stale-${engine}`
    origin.resetCounters()
    const inFlight = postDump(a, token, 'json', [{ name: 'cut off', images: [origin.url('/png/1'), origin.url(`/held/${key}/png/2`)] }])
    await origin.waitForRequests(2)
    const { id } = await a.persistence.db.selectFrom('requests').select('id').where('status', '=', 0).executeTakeFirstOrThrow()
    const recorded = async () => await a.persistence.db.selectFrom('dump_images').select(['image_id', 'status']).where('request_id', '=', id).execute()
    for (const deadline = Date.now() + 10_000; (await recorded()).length === 0;) {
      if (Date.now() > deadline) throw new Error('the first outcome was not recorded')
      await sleep(20)
    }

    // The other instance: same database, same storage. It takes the dump over as its sweep
    // does once the heartbeat is stale: SQLite at its start (the embedded database is one
    // process's, so whatever is incomplete then was left behind); MySQL forced here, since
    // this process cannot cut one app off the database alone.
    const { app: b } = await buildTestApp(t, engine, { STORAGE_DIR: storageDir }, database)
    if (engine === 'mysql') t.equal(await b.dumps.resumeUnfinished(0), 1, 'the other instance takes the dump')
    const taken = await a.persistence.db.selectFrom('requests').select(['status', 'resumes']).where('id', '=', id).executeTakeFirstOrThrow()
    t.same([Number(taken.status), taken.resumes], [0, 1], 'the dump is held by its second run')

    // The first instance learns at its next heartbeat (run here rather than waited for).
    await a.dumps.heartbeat()
    const response = await inFlight
    t.equal(response.statusCode, 503, 'the first instance does not claim an outcome it no longer owns')
    t.equal(response.json().message, `dump ${id} was taken over by another instance, which goes on with it (this one could not record its progress in time); follow it at GET /v1/dumps/${id}`)
    t.same((await filesUnder(storageDir)).filter((f) => f.endsWith('.part')), [], 'it left no temporary file')

    origin.release(key)
    await b.dumps.settled()
    const after = await a.persistence.db.selectFrom('requests').select(['status', 'resumes', 'data']).where('id', '=', id).executeTakeFirstOrThrow()
    t.same([Number(after.status), after.resumes], [1, 1], 'the second run completed it')
    const record = JSON.parse(Buffer.from(after.data!).toString('utf8'))
    t.match(record, { requestId: id, status: 'SUCCESS', items: [{ images: [{ imageId: 1, status: 'SUCCESS' }, { imageId: 2, status: 'SUCCESS' }] }] })
    t.same(origin.paths.filter((p) => p === '/png/1'), ['/png/1'], 'the outcome recorded before the takeover was kept, not downloaded again')
    t.equal(origin.paths.filter((p) => p === `/held/${key}/png/2`).length, 2, 'the pending image was downloaded by both, kept from the second')
    const folder = join(String(userid), String(id))
    t.same(await filesUnder(join(storageDir, folder)), ['1.png', '2.png'], 'the files are exactly the recorded successes')
    for (const image of record.items[0].images as Array<{ imageId: number, sha256: string }>) {
      t.equal(sha256(await readFile(join(storageDir, folder, `${image.imageId}.png`))), image.sha256, `image ${image.imageId} holds the bytes its record describes`)
    }
    t.same((await recorded()).map((r) => r.image_id).sort(), [1, 2], 'one outcome row per image')
  })
}
