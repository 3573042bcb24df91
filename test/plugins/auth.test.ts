import t from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import persistence from '../../plugins/persistence.js'
import users from '../../plugins/users.js'
import auth from '../../plugins/auth.js'
import { sha256Hex } from '../../lib/password.js'
import { createTestDatabase, enginesUnderTest } from '../helpers/db.js'
import { decodeToken, forgeToken } from '../helpers/jwt.js'
import { issueToken } from '../helpers/users.js'

const usersFile = new URL('../../users.txt', import.meta.url).pathname
const plans = ['gold', 'silver', 'bronze']

/** persistence + users + auth in a bare app, with one protected route and no service routes */
async function bareApp (t: { teardown: (fn: () => unknown) => void }, url: string, tokenExpirySeconds = 1200): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(persistence, { databaseUrl: url })
  await app.register(users, { usersFile, plans })
  await app.register(auth, { tokenExpirySeconds })
  app.get('/me', { onRequest: app.imageDumpAuth.authenticate }, async (request) => request.principal)
  await app.ready()
  t.teardown(() => app.close())
  return app
}

const me = (app: FastifyInstance, token: string) =>
  app.inject({ method: 'GET', url: '/me', headers: { authorization: `Bearer ${token}` } })

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: auth plugin alone`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const app = await bareApp(t, database.url)

    t.test('users.txt is imported with hashed passwords only', async (t) => {
      const rows = await app.persistence.db.selectFrom('users').innerJoin('authentication', 'authentication.userid', 'users.userid')
        .select(['username', 'plan', 'passwordhash']).orderBy('username').execute()
      t.same(rows.map((r) => [r.username, r.plan]), [['alice', 'gold'], ['bob', 'silver'], ['carol', 'bronze']])
      for (const row of rows) {
        t.match(row.passwordhash, /^\$argon2id\$v=19\$m=\d+,p=\d+,t=\d+\$/, 'a PHC argon2id string')
        t.notMatch(row.passwordhash, sha256Hex('gold-password'), 'never the client value itself')
      }
      const again = await app.imageDumpUsers.importFile(usersFile, plans)
      t.same(again, { created: 0, updated: 0, disabled: 0 }, 'importing the same file again changes nothing')
    })

    t.test('login signs an HS256 token with the secret stored in tokens', async (t) => {
      const token = await issueToken(app, 'alice', sha256Hex('gold-password'))
      t.ok(token)
      const { header, payload } = decodeToken(token!.access_token)
      t.equal(header.alg, 'HS256')
      const alice = await app.imageDumpUsers.findByUsername('alice')
      t.equal(payload.sub, String(alice!.userid))
      t.equal(Number(payload.exp) - Number(payload.iat), 1200)
      const row = await app.persistence.db.selectFrom('tokens').selectAll().where('userid', '=', alice!.userid).executeTakeFirstOrThrow()
      t.ok(row.user_secret.length >= 32, 'at least 32 random bytes')
      const resigned = forgeToken(header, payload, Buffer.from(row.user_secret))
      t.equal(resigned, token!.access_token, 'the signature is made with tokens.user_secret')
      t.equal((await me(app, token!.access_token)).json().username, 'alice')
    })

    t.test('each login rotates the secret and the time of rotation', async (t) => {
      const alice = (await app.imageDumpUsers.findByUsername('alice'))!
      const first = await issueToken(app, 'alice', sha256Hex('gold-password'))
      const before = await app.persistence.db.selectFrom('tokens').selectAll().where('userid', '=', alice.userid).executeTakeFirstOrThrow()
      const second = await issueToken(app, 'alice', sha256Hex('gold-password'))
      const after = await app.persistence.db.selectFrom('tokens').selectAll().where('userid', '=', alice.userid).executeTakeFirstOrThrow()
      t.not(Buffer.from(after.user_secret).toString('hex'), Buffer.from(before.user_secret).toString('hex'))
      t.ok(new Date(after.last_updated) >= new Date(before.last_updated))
      t.equal((await me(app, first!.access_token)).statusCode, 401, 'the earlier token stops working')
      t.equal((await me(app, second!.access_token)).statusCode, 200)
    })

    t.test('wrong password and unknown user are refused alike', async (t) => {
      t.equal(await issueToken(app, 'alice', sha256Hex('wrong')), undefined)
      t.equal(await issueToken(app, 'nobody', sha256Hex('gold-password')), undefined)
    })

    t.test('forged and stale tokens get 401', async (t) => {
      const good = (await issueToken(app, 'bob', sha256Hex('silver-password')))!.access_token
      const { header, payload } = decodeToken(good)
      const bob = (await app.imageDumpUsers.findByUsername('bob'))!
      const secret = Buffer.from((await app.persistence.db.selectFrom('tokens').select('user_secret').where('userid', '=', bob.userid).executeTakeFirstOrThrow()).user_secret)
      const nowS = Math.floor(Date.now() / 1000)
      const forged: Record<string, string> = {
        'alg none': forgeToken({ alg: 'none', typ: 'JWT' }, payload),
        'HS512 with the right secret': forgeToken({ alg: 'HS512', typ: 'JWT' }, payload, secret),
        'wrong key': forgeToken(header, payload, Buffer.alloc(32, 7)),
        'tampered payload': good.split('.')[0] + '.' + Buffer.from(JSON.stringify({ ...payload, sub: '1' })).toString('base64url') + '.' + good.split('.')[2],
        expired: forgeToken(header, { ...payload, iat: nowS - 3600, exp: nowS - 60 }, secret),
        'no sub': forgeToken(header, { iat: nowS, exp: nowS + 60 }, secret),
        'no exp, signed with the right secret': forgeToken(header, { sub: payload.sub, iat: nowS }, secret),
        'sub of another user, signed with this secret': forgeToken(header, { ...payload, sub: '1' }, secret),
        garbage: 'not.a.token'
      }
      for (const [name, token] of Object.entries(forged)) {
        const response = await me(app, token)
        t.equal(response.statusCode, 401, name)
        t.equal(response.headers['www-authenticate'], 'Bearer', `${name}: says how to authenticate`)
      }
      t.equal((await app.inject({ method: 'GET', url: '/me' })).statusCode, 401, 'no token at all')
      const basic = await app.inject({ method: 'GET', url: '/me', headers: { authorization: 'Basic YWxpY2U6eA==' } })
      t.equal(basic.statusCode, 401, 'Basic credentials are for the login only')
      t.match(basic.json().message, /send "Authorization: Bearer <token>" with a token from POST \/v1\/auth\/token/)
      t.equal((await me(app, good)).statusCode, 200, 'the genuine token still works')
    })

    t.test('a user whose secret row is missing or empty gets 401', async (t) => {
      const carol = (await app.imageDumpUsers.findByUsername('carol'))!
      const token = (await issueToken(app, 'carol', sha256Hex('bronze-password')))!.access_token
      t.equal((await me(app, token)).statusCode, 200)
      const { header, payload } = decodeToken(token)

      await app.persistence.db.updateTable('tokens').set({ user_secret: Buffer.alloc(0) }).where('userid', '=', carol.userid).execute()
      t.equal((await me(app, token)).statusCode, 401, 'empty secret')
      t.equal((await me(app, forgeToken(header, payload, Buffer.alloc(0)))).statusCode, 401, 'a token signed with the empty key')

      await app.persistence.db.deleteFrom('tokens').where('userid', '=', carol.userid).execute()
      t.equal((await me(app, token)).statusCode, 401, 'missing secret row')
    })
  })

  t.test(`${engine}: TOKEN_EXPIRY sets exp`, async (t) => {
    const database = await createTestDatabase(engine)
    t.teardown(database.drop)
    const app = await bareApp(t, database.url, 60)
    const token = (await issueToken(app, 'alice', sha256Hex('gold-password')))!
    t.equal(token.expires_in, 60)
    const { payload } = decodeToken(token.access_token)
    t.equal(Number(payload.exp) - Number(payload.iat), 60)
  })
}
