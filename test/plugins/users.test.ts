/**
 * users.txt is the truth at every start: a user taken out of it can no longer log in and
 * their tokens stop working; a changed password ends the sessions of the old one; a plan
 * change alone ends nothing. Nobody's history is deleted.
 */
import t from 'tap'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance } from 'fastify'
import persistence from '../../plugins/persistence.js'
import users from '../../plugins/users.js'
import auth from '../../plugins/auth.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { issueToken } from '../helpers/users.js'

const plans = ['gold', 'silver', 'bronze']
const HEADER = 'username,password,plan\n'

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: users.txt at every start`, async (t) => {
    const database = await createTestDatabase(engine)
    const dir = await mkdtemp(join(tmpdir(), 'image-dump-users-'))
    t.teardown(async () => {
      await database.drop()
      await rm(dir, { recursive: true, force: true })
    })
    const file = join(dir, 'users.txt')

    /** One start of the service with `lines` as users.txt. */
    async function start (lines: string): Promise<FastifyInstance> {
      await writeFile(file, HEADER + lines)
      const app = Fastify()
      await app.register(persistence, { databaseUrl: database.url })
      await app.register(users, { usersFile: file, plans })
      await app.register(auth, { tokenExpirySeconds: 1200 })
      app.get('/me', { onRequest: app.imageDumpAuth.authenticate }, async (request) => request.principal)
      await app.ready()
      t.teardown(() => app.close())
      return app
    }
    const me = (app: FastifyInstance, token: string) => app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${token}` } })

    const first = await start('ann,ann-pw,gold\nben,ben-pw,silver\n')
    const annToken = (await issueToken(first, 'ann', sha256Hex('ann-pw')))!.access_token
    const benToken = (await issueToken(first, 'ben', sha256Hex('ben-pw')))!.access_token
    const annId = (await first.imageDumpUsers.findByUsername('ann'))!.userid
    await first.persistence.db.insertInto('requests').values({ userid: annId, dataformat: 'json', data: null, status: 1 }).execute()
    await first.close()

    t.test('a plan change keeps sessions', async (t) => {
      const app = await start('ann,ann-pw,bronze\nben,ben-pw,silver\n')
      const answer = await me(app, annToken)
      t.equal(answer.statusCode, 200)
      t.equal(answer.json().plan, 'bronze', 'the token carries no plan: the new one applies at once')
      await app.close()
    })

    t.test('a removed user can no longer log in, their tokens stop working, their history stays', async (t) => {
      const app = await start('ben,ben-pw,silver\n')
      const answer = await me(app, annToken)
      t.equal(answer.statusCode, 401)
      t.equal(answer.json().message, 'Authorization token is invalid')
      t.equal(await issueToken(app, 'ann', sha256Hex('ann-pw')), undefined, 'no login')
      t.equal((await me(app, benToken)).statusCode, 200, 'the users still listed are untouched')
      const rows = await app.persistence.db.selectFrom('requests').select('id').where('userid', '=', annId).execute()
      t.equal(rows.length, 1, "ann's logged dumps are kept")
      await app.close()
    })

    t.test('a user put back can log in again', async (t) => {
      const app = await start('ann,ann-pw,gold\nben,ben-pw,silver\n')
      t.ok(await issueToken(app, 'ann', sha256Hex('ann-pw')))
      t.equal((await app.imageDumpUsers.findByUsername('ann'))!.userid, annId, 'as the same user, with the same history')
      await app.close()
    })

    t.test('a changed password ends the sessions of the old one', async (t) => {
      const app = await start('ann,ann-pw,gold\nben,new-ben-pw,silver\n')
      t.equal((await me(app, benToken)).statusCode, 401, "ben's token from before the change")
      t.equal(await issueToken(app, 'ben', sha256Hex('ben-pw')), undefined, 'the old password')
      const fresh = await issueToken(app, 'ben', sha256Hex('new-ben-pw'))
      t.ok(fresh, 'the new password')
      t.equal((await me(app, fresh!.access_token)).statusCode, 200)
      await app.close()
    })
  })
}
