/**
 * A host app of the installed package, as test/package/pack.test.ts builds it outside the
 * repository: the whole application under /images, and the persistence, users and auth
 * plugins alone in a scope of the host's own (/staff), guarding its routes with their own
 * database. Compiled against the declarations in the tarball; `misuses` below must stay
 * type errors, so declarations that went missing (everything `any`) fail the compile too.
 *
 * Environment: PORT, and the service's variables (DATABASE_URL, STORAGE_DIR, USERS_FILE…);
 * STAFF_DATABASE_URL for the /staff scope.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import imageDump from 'image-dump'
import { loadConfig, type Config } from 'image-dump/config'
import persistence from 'image-dump/plugins/persistence'
import users from 'image-dump/plugins/users'
import auth, { type Principal } from 'image-dump/plugins/auth'

const config: Config = loadConfig(process.env)
const app = Fastify({ logger: { level: config.logLevel } })

app.get('/hello', async () => ({ hello: 'from the host' }))

await app.register(imageDump, { prefix: '/images', config })

async function staff (scope: FastifyInstance): Promise<void> {
  await scope.register(persistence, { databaseUrl: process.env.STAFF_DATABASE_URL ?? 'sqlite:./staff.db' })
  await scope.register(users, { usersFile: config.usersFile, plans: Object.keys(config.plans) })
  await scope.register(auth, { tokenExpirySeconds: 600 })

  scope.post<{ Body: { username: string, passwordHash: string } }>('/login', async (request, reply) => {
    const result = await scope.imageDumpAuth.login(request.body.username, request.body.passwordHash, request.ip)
    if (result.outcome !== 'token') return await reply.code(401).send({ refused: result.outcome })
    return { token: result.token.access_token, expiresIn: result.token.expires_in }
  })

  scope.get('/me', { onRequest: scope.imageDumpAuth.authenticate }, async (request) => {
    const principal: Principal = request.principal
    const user = await scope.persistence.db.selectFrom('users').select(['username', 'plan']).where('userid', '=', principal.userid).executeTakeFirstOrThrow()
    const health = await scope.persistence.health()
    return { username: user.username, plan: user.plan, userid: principal.userid, databaseOk: health.ok }
  })
}
await app.register(staff, { prefix: '/staff' })

/** Never called: each statement is a misuse the shipped declarations must refuse. */
export function misuses (scope: FastifyInstance): void {
  // @ts-expect-error the application needs its configuration
  void scope.register(imageDump, { prefix: '/images' })
  // @ts-expect-error a login needs the client's address, for the throttle
  void scope.imageDumpAuth.login('alice', 'hash')
  scope.get('/typed', async (request) => {
    // @ts-expect-error a principal's userid is a number
    const id: string = request.principal.userid
    // @ts-expect-error Kysely knows the tables, and there is no such one
    await scope.persistence.db.selectFrom('no_such_table').selectAll().execute()
    return id
  })
}

process.once('SIGTERM', () => {
  app.close().then(() => process.exit(0), (error: unknown) => { app.log.error({ err: error }, 'close failed'); process.exit(1) })
})
await app.listen({ port: Number(process.env.PORT ?? 0), host: '127.0.0.1' })
