/**
 * Admission with an idempotency key, on the quota service alone: the row is inserted
 * first and the unique index decides; past the limit the insert is rolled back, so the
 * quota stays exact under concurrency, and a refused admission keeps no key.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { createQuotaService, type QuotaRecord } from '../../plugins/quota.js'
import { enginesUnderTest, migratedTestDatabase } from '../helpers/db.js'

const record = (key: string, digest = 1): QuotaRecord => ({
  dataformat: 'json',
  data: Buffer.from('{}'),
  idempotency: { key, batchSha256: Buffer.alloc(32, digest) }
})

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: keyed admissions`, async (t) => {
    const { db } = await migratedTestDatabase(t, engine)
    const quota = createQuotaService(db, engine, { plans: { bronze: 25 } })
    let users = 0
    const newUser = async (): Promise<number> =>
      Number((await db.insertInto('users').values({ username: `user${++users}`, plan: 'bronze' }).executeTakeFirstOrThrow()).insertId)
    const rowsOf = async (userid: number): Promise<number> =>
      Number((await db.selectFrom('requests').select((eb) => eb.fn.countAll<number>().as('n')).where('userid', '=', userid).executeTakeFirstOrThrow()).n)

    t.test('40 concurrent admissions with one key: one admitted, 39 told which dump it is', async (t) => {
      const userid = await newUser()
      const key = randomUUID()
      const admissions = await Promise.all(Array.from({ length: 40 }, () => quota.admit(userid, 25, record(key))))
      const admitted = admissions.filter((a) => a.admitted)
      t.equal(admitted.length, 1, 'one admitted')
      const replays = admissions.filter((a) => a.replayOf !== undefined)
      t.equal(replays.length, 39, 'the others are replays')
      t.ok(replays.every((a) => a.replayOf!.requestId === admitted[0]!.requestId), 'of that dump')
      t.ok(replays.every((a) => a.current === 1), 'counting the one slot taken, not their own')
      t.equal(await rowsOf(userid), 1, 'one row')
    })

    t.test('40 concurrent admissions with 40 keys for a limit of 25 admit exactly 25', async (t) => {
      const userid = await newUser()
      const admissions = await Promise.all(Array.from({ length: 40 }, () => quota.admit(userid, 25, record(randomUUID()))))
      t.equal(admissions.filter((a) => a.admitted).length, 25, 'admitted')
      t.equal(admissions.filter((a) => !a.admitted && a.replayOf === undefined).length, 15, 'refused')
      t.equal(await rowsOf(userid), 25, 'the refused inserts were rolled back')
      const keys = await db.selectFrom('requests').select('idempotency_key').where('userid', '=', userid).execute()
      t.equal(new Set(keys.map((k) => k.idempotency_key)).size, 25, 'only the admitted keep their key')
    })

    t.test('at the limit, a replay is still found; a refused key is free to use later', async (t) => {
      const userid = await newUser()
      const kept = randomUUID()
      for (let i = 0; i < 25; i++) t.ok((await quota.admit(userid, 25, record(i === 0 ? kept : randomUUID()))).admitted)
      const replay = await quota.admit(userid, 25, record(kept, 9))
      t.equal(replay.admitted, false)
      t.match(replay.replayOf, { dataformat: 'json', complete: false }, 'found, whatever the quota')
      t.same(replay.replayOf!.batchSha256, Buffer.alloc(32, 1), 'with the digest of the batch first sent')

      const refusedKey = randomUUID()
      const refused = await quota.admit(userid, 25, record(refusedKey))
      t.match(refused, { admitted: false, current: 26 }, 'over the limit')
      t.equal(refused.replayOf, undefined)
      // an hour later for the oldest dump only: one slot frees
      const oldest = await db.selectFrom('requests').select('id').where('userid', '=', userid).orderBy('id').limit(1).executeTakeFirstOrThrow()
      const hourAgo = engine === 'mysql'
        ? sql`created_at - INTERVAL 3601 SECOND`
        : sql`strftime('%Y-%m-%d %H:%M:%f', created_at, '-3601 seconds')`
      await db.updateTable('requests').set({ created_at: hourAgo } as never).where('id', '=', oldest.id).execute()
      const later = await quota.admit(userid, 25, record(refusedKey))
      t.equal(later.admitted, true, 'the key refused before makes a dump now')
      t.equal(later.replayOf, undefined)
    })
  })
}
