/**
 * Idempotency-Key on POST /v1/dumps: the same user sending the same key with the same
 * batch within 24 h gets the same dump (one row, one quota slot, one download), marked
 * `Idempotent-Replayed: true`; a replay that arrives while the dump runs waits for it.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { countRows, filesUnder, postDump, type Format, type TestItem } from '../helpers/dumps.js'
import { captureLogs } from '../helpers/logs.js'
import { startOrigin } from '../helpers/origin.js'
import type { Engine } from '../../db/schema.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

const WAITING = /"msg":"replay: waiting for the dump to complete"/

/** The row of one dump, as the admission wrote it. */
async function rowOf (app: FastifyInstance, id: number) {
  return await app.persistence.db.selectFrom('requests').select(['id', 'userid', 'idempotency_key', 'batch_sha256', 'status'])
    .where('id', '=', id).executeTakeFirstOrThrow()
}

/** Moves one dump's admission back in time by `seconds`, as if it had been sent that much earlier. */
async function admittedSecondsAgo (app: FastifyInstance, engine: Engine, id: number, seconds: number): Promise<void> {
  const earlier = engine === 'mysql'
    ? sql`created_at - INTERVAL ${sql.lit(seconds)} SECOND`
    : sql`strftime('%Y-%m-%d %H:%M:%f', created_at, ${sql.lit(`-${seconds} seconds`)})`
  await app.persistence.db.updateTable('requests').set({ created_at: earlier } as never).where('id', '=', id).execute()
}

/** How many times the origin was asked for paths that start with `prefix`. */
const hits = (prefix: string): number => origin.paths.filter((path) => path.startsWith(prefix)).length

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: Idempotency-Key`, async (t) => {
    const logs = captureLogs()
    const { app, storageDir } = await buildTestApp(t, engine, {}, undefined, { logger: logs.logger })
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const post = (items: readonly TestItem[], key?: string, headers: Record<string, string> = {}, format: Format = 'json') =>
      postDump(app, token, format, items, { ...(key === undefined ? {} : { 'idempotency-key': key }), ...headers })

    t.test('two concurrent posts with one key make one dump: one row, one requestId, one download', async (t) => {
      const key = randomUUID()
      const hold = `concurrent-${engine}`
      const items = [{ name: 'Held', images: [origin.url(`/held/${hold}/png/1`), origin.url(`/png/2?${hold}`)] }]
      const [rows, seen, waiting] = [await countRows(app), origin.requests, logs.count(WAITING)]
      const both = Promise.all([post(items, key), post(items, key)])
      // one of them downloads, the other finds the key taken and waits for it (a second
      // dump would show as a third request at the origin)
      await Promise.race([logs.waitFor(WAITING, waiting + 1), origin.waitForRequests(seen + 3)])
      t.equal(logs.count(WAITING), waiting + 1, 'the second request waits for the first one\'s dump')
      origin.release(hold)
      const [a, b] = await both
      t.equal(a.statusCode, 200)
      t.equal(b.statusCode, 200)
      t.equal(a.json().requestId, b.json().requestId, 'one requestId')
      t.same([a, b].map((r) => r.headers['idempotent-replayed']).sort(), ['true', undefined], 'the second is marked replayed')
      t.same(a.json(), b.json(), 'and answers the same dump')
      t.equal(a.json().status, 'SUCCESS', 'complete: the replay waited for the downloads')
      t.equal(await countRows(app), rows + 1, 'one row')
      t.equal(hits(`/held/${hold}/`), 1, 'each image downloaded once')
      t.equal(hits(`/png/2?${hold}`), 1)
    })

    t.test('a replay that arrives while the dump runs waits for it, then answers the whole dump', async (t) => {
      const key = randomUUID()
      const hold = `running-${engine}`
      const items = [{ name: 'Held', images: [origin.url(`/held/${hold}/png/3`)] }]
      const seen = origin.requests
      const first = post(items, key)
      await origin.waitForRequests(seen + 1)
      let replayAnswered = false
      const waiting = logs.count(WAITING)
      const replay = post(items, key).finally(() => { replayAnswered = true })
      await Promise.race([logs.waitFor(WAITING, waiting + 1), origin.waitForRequests(seen + 2), replay])
      t.equal(logs.count(WAITING), waiting + 1, 'the replay waits')
      t.notOk(replayAnswered, 'no answer while the image is held')
      origin.release(hold)
      const [original, replayed] = await Promise.all([first, replay])
      t.equal(original.headers['idempotent-replayed'], undefined, 'the first answer is not a replay')
      t.equal(replayed.headers['idempotent-replayed'], 'true')
      t.equal(replayed.statusCode, 200)
      t.equal(replayed.body, original.body, 'the same answer')
      t.equal(hits(`/held/${hold}/`), 1, 'downloaded once')
    })

    t.test('a replay of a complete dump is its answer, byte for byte, with nothing downloaded or written', async (t) => {
      const key = randomUUID()
      const items = [{ name: 'Done', brand: 'B', images: [origin.url('/png/41'), origin.url('/status/404')] }]
      const original = await post(items, key)
      t.equal(original.statusCode, 200)
      const [rows, files, requests] = [await countRows(app), await filesUnder(storageDir), origin.requests]
      const again = await post(items, key)
      t.equal(again.statusCode, 200)
      t.equal(again.headers['idempotent-replayed'], 'true')
      t.equal(again.body, original.body)
      t.match(again.headers['content-type'], /^application\/json/)
      t.equal(again.headers['ratelimit-remaining'], original.headers['ratelimit-remaining'], 'no quota slot taken')
      t.equal(await countRows(app), rows, 'no row')
      t.same(await filesUnder(storageDir), files, 'no file')
      t.equal(origin.requests, requests, 'no download')
      const row = await rowOf(app, original.json().requestId)
      t.equal(row.idempotency_key, key, 'the row keeps the key')
      t.equal(Buffer.from(row.batch_sha256!).length, 32, 'and the SHA-256 of its batch')
    })

    t.test('the same batch in another JSON shape is a replay; field order and spacing do not matter', async (t) => {
      const key = randomUUID()
      const items = [{ name: 'Shape', category: 'C', images: [origin.url('/png/42')] }]
      const canonical = await post(items, key)
      const literal = await post(items, key, {}, 'literal')
      t.equal(literal.headers['idempotent-replayed'], 'true', 'the literal mapping of the XML')
      t.equal(literal.json().requestId, canonical.json().requestId)
      const reordered = `{ "items" : [ { "images": ["${origin.url('/png/42')}"], "category": "C", "name": " Shape " } ] }`
      const spaced = await app.inject({ method: 'POST', url: '/v1/dumps', payload: reordered, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key } })
      t.equal(spaced.headers['idempotent-replayed'], 'true', 'reordered fields, spaces trimmed as the batch reader trims them')
    })

    t.test('the same key with another batch or another format is 422, naming the mismatch, and changes nothing', async (t) => {
      const key = randomUUID()
      const items = [{ name: 'First', images: [origin.url('/png/43')] }]
      const first = await post(items, key)
      const { requestId } = first.json()
      const [rows, requests] = [await countRows(app), origin.requests]

      const other = await post([{ name: 'Second', images: [origin.url('/png/43')] }], key)
      t.equal(other.statusCode, 422)
      t.equal(other.json().error, 'Unprocessable Entity')
      t.equal(other.json().message, `the Idempotency-Key "${key}" was first sent with a different batch (dump ${requestId}); send a new batch with a new key`)

      const xml = await post(items, key, {}, 'xml')
      t.equal(xml.statusCode, 422)
      t.match(xml.headers['content-type'], /^application\/xml/, 'an XML client hears it in XML')
      t.match(xml.body, `was first sent with a batch in JSON, this one is in XML (dump ${requestId})`)

      t.equal(await countRows(app), rows, 'no row')
      t.equal(origin.requests, requests, 'no download')
      t.equal((await post(items, key)).headers['idempotent-replayed'], 'true', 'the key still names its dump')
    })

    t.test('an XML dump replays in XML; Accept is honoured, numbers and all', async (t) => {
      const key = randomUUID()
      const items = [{ name: 'Xml', manufacturer: 'M', images: [origin.url('/jpeg/44'), origin.url('/status/410')] }]
      const original = await post(items, key, {}, 'xml')
      t.match(original.headers['content-type'], /^application\/xml/)
      const again = await post(items, key, {}, 'xml')
      t.equal(again.body, original.body, 'the same XML')
      const requestId = Number(/<requestId>(\d+)<\/requestId>/.exec(original.body)![1])
      const asJson = await post(items, key, { accept: 'application/json' }, 'xml')
      t.equal(asJson.headers['idempotent-replayed'], 'true')
      t.match(asJson.headers['content-type'], /^application\/json/)
      const body = asJson.json()
      t.equal(body.requestId, requestId)
      t.equal(body.status, 'PARTIAL')
      t.equal(body.items[0].manufacturer, 'M')
      t.match(body.items[0].images[0], { imageId: 1, status: 'SUCCESS', contentType: 'image/jpeg' })
      t.type(body.items[0].images[0].bytes, 'number', 'bytes is a number again')
      t.same(body.items[0].images[1].error, { type: 'HTTP_ERROR', httpStatus: 410 })
    })

    t.test('a key belongs to its user: another user with the same key gets a dump of their own', async (t) => {
      const key = randomUUID()
      const mine = await post([{ name: 'Mine', images: [origin.url('/png/45')] }], key)
      const bob = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
      const theirs = await postDump(app, bob, 'json', [{ name: 'Theirs', images: [origin.url('/png/46')] }], { 'idempotency-key': key })
      t.equal(theirs.statusCode, 200)
      t.equal(theirs.headers['idempotent-replayed'], undefined)
      t.not(theirs.json().requestId, mine.json().requestId)
      const bobsAgain = await postDump(app, bob, 'json', [{ name: 'Theirs', images: [origin.url('/png/46')] }], { 'idempotency-key': key })
      t.equal(bobsAgain.json().requestId, theirs.json().requestId, 'and replays their own')
    })

    t.test('bad keys are 400 naming the rule, before the body is read, with nothing written', async (t) => {
      const items = [{ name: 'Bad key', images: [origin.url('/png/47')] }]
      const [rows, files, requests] = [await countRows(app), await filesUnder(storageDir), origin.requests]
      const rule = 'an Idempotency-Key is 1 to 255 visible ASCII characters (0x21-0x7E)'
      const cases: Array<[string, string | string[], string]> = [
        ['empty', '', `the Idempotency-Key is empty: ${rule}`],
        ['256 characters', 'k'.repeat(256), `the Idempotency-Key is 256 characters long: ${rule}`],
        ['a space inside', 'a b', `the Idempotency-Key "a b" has a character that is not visible ASCII at position 2: ${rule}`],
        ['a tab', 'a\tb', `the Idempotency-Key "a\\tb" has a character that is not visible ASCII at position 2: ${rule}`],
        ['a control character', 'ab\u0001', `the Idempotency-Key "ab\\u0001" has a character that is not visible ASCII at position 3: ${rule}`],
        ['DEL', 'ab\u007f', `the Idempotency-Key "ab\\u007f" has a character that is not visible ASCII at position 3: ${rule}`],
        ['non-ASCII', 'clé', `the Idempotency-Key "clé" has a character that is not visible ASCII at position 3: ${rule}`],
        ['sent twice', ['a', 'a'], 'the Idempotency-Key header must be sent once']
      ]
      for (const [name, key, message] of cases) {
        const response = await app.inject({
          method: 'POST',
          url: '/v1/dumps',
          payload: JSON.stringify({ items }),
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key as string }
        })
        t.equal(response.statusCode, 400, name)
        t.equal(response.json().message, message, `${name}: says why`)
      }
      const long = await post(items, 'x'.repeat(10_000))
      t.ok(long.json().message.length < 200, 'a 10,000-character key is not quoted back in full')
      t.equal((await post(items, 'k'.repeat(255))).statusCode, 200, '255 characters are a key')
      t.equal((await post(items, '"quoted-as-the-draft-writes-it"')).statusCode, 200, 'the draft\'s quoted form is a key too')
      t.equal(await countRows(app), rows + 2, 'no row for the refused ones')
      // the two dumps admitted store the same image: identical bytes are kept once per user
      t.equal((await filesUnder(storageDir)).length, files.length + 1, 'no file for them')
      t.equal(origin.requests, requests + 2, 'no download for them')
    })

    t.test('after 24 h the key names a new dump', async (t) => {
      const key = randomUUID()
      const items = [{ name: 'Old', images: [origin.url('/png/48')] }]
      const old = (await post(items, key)).json().requestId
      await admittedSecondsAgo(app, engine, old, 24 * 3600 + 1)
      const again = await post(items, key)
      t.equal(again.statusCode, 200)
      t.equal(again.headers['idempotent-replayed'], undefined, 'not a replay')
      t.not(again.json().requestId, old, 'a new dump')
      t.equal((await rowOf(app, old)).idempotency_key, null, 'the old dump keeps its row, without the key')
      t.equal((await post(items, key)).json().requestId, again.json().requestId, 'the key now names the new dump')

      await admittedSecondsAgo(app, engine, again.json().requestId, 24 * 3600 + 1)
      const other = await post([{ name: 'Other batch', images: [origin.url('/png/49')] }], key)
      t.equal(other.statusCode, 200, 'an expired key may come with another batch')
      t.equal(other.headers['idempotent-replayed'], undefined)

      const young = (await post(items, randomUUID())).json().requestId
      await admittedSecondsAgo(app, engine, young, 24 * 3600 - 60)
      const youngKey = (await rowOf(app, young)).idempotency_key!
      t.equal((await post(items, youngKey)).json().requestId, young, 'a key a minute short of 24 h still replays')
    })
  })

  t.test(`${engine}: a replay takes no quota slot, even at the limit`, async (t) => {
    const { app } = await buildTestApp(t, engine)
    const token = await login(app, sampleUsers.bronze.username, sampleUsers.bronze.password)
    const carol = (await app.imageDumpUsers.findByUsername(sampleUsers.bronze.username))!
    await app.persistence.db.insertInto('requests')
      .values(Array.from({ length: 24 }, () => ({ userid: carol.userid, dataformat: 'json' as const, data: null, status: 1 }))).execute()
    const key = randomUUID()
    const items = [{ name: 'Last slot', images: [origin.url('/png/50')] }]
    const last = await postDump(app, token, 'json', items, { 'idempotency-key': key })
    t.equal(last.statusCode, 200, 'the 25th dump of the hour')
    t.equal(last.headers['ratelimit-remaining'], '0')
    const replay = await postDump(app, token, 'json', items, { 'idempotency-key': key })
    t.equal(replay.statusCode, 200, 'its replay is answered, not refused')
    t.equal(replay.headers['idempotent-replayed'], 'true')
    t.equal(replay.headers['ratelimit-remaining'], '0')
    const fresh = await postDump(app, token, 'json', items, { 'idempotency-key': randomUUID() })
    t.equal(fresh.statusCode, 429, 'a new key is a new dump, over the limit')
    t.equal((await postDump(app, token, 'json', items)).statusCode, 429, 'and so is a dump without a key')
    const quota = await app.inject({ method: 'GET', url: '/v1/quota', headers: { authorization: `Bearer ${token}` } })
    t.match(quota.json(), { used: 25, remaining: 0 }, 'the replay used no slot')
    const rows = await app.persistence.db.selectFrom('requests').select('id').where('userid', '=', carol.userid).execute()
    t.equal(rows.length, 25, 'and wrote no row; the refused ones neither')
  })
}
