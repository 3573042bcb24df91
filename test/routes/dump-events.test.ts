/**
 * GET /v1/dumps/{id}/events: a dump's progress as Server-Sent Events, read over real HTTP
 * by an independent parser (and, once, by a real EventSource client).
 */
import t from 'tap'
import { EventSource } from 'eventsource'
import { Agent, fetch as undiciFetch } from 'undici'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { enginesUnderTest } from '../helpers/db.js'
import { postDump, type TestItem } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { dataOf, readEvents } from '../helpers/sse.js'

const origin = await startOrigin()
t.teardown(() => origin.close())

async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return `http://127.0.0.1:${address.port}`
}

const ids = (events: ReadonlyArray<{ id?: string | undefined }>): number[] => events.map((event) => Number(event.id))

for (const engine of enginesUnderTest(t)) {
  t.test(`${engine}: the events of a dump`, async (t) => {
    const { app } = await buildTestApp(t, engine, { EVENTS_MAX_STREAMS_PER_USER: '3' })
    const base = await listen(app)
    const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
    const auth = { authorization: `Bearer ${token}` }
    t.test('followed live: progress, one image event per outcome as it is recorded, then complete', async (t) => {
      const hold = `events-live-${engine}`
      const items: TestItem[] = [
        { name: 'Fast', images: [origin.url('/png/1'), origin.url('/png/2'), origin.url('/status/404')] },
        { name: 'Held', images: [origin.url(`/held/${hold}/png/3`), origin.url(`/held/${hold}/png/4`)] }
      ]
      const accepted = await postDump(app, token, 'json', items, { prefer: 'respond-async' })
      t.equal(accepted.statusCode, 202)
      const { requestId } = accepted.json()
      const url = `${base}/v1/dumps/${requestId}/events`

      // the three that can finish do, while the held ones wait: read until they are seen
      const before = await readEvents(url, auth, (events) => dataOf(events, 'image').length === 3)
      t.equal(before.status, 200)
      t.match(before.headers.get('content-type'), /^text\/event-stream/)
      t.equal(before.headers.get('cache-control'), 'no-cache')
      t.same(before.events[0], { id: '0', event: 'progress', data: JSON.stringify({ requestId, total: 5, done: 0, succeeded: 0, failed: 0 }) }, 'first the progress as of the start')
      const early = dataOf(before.events, 'image')
      t.same(early.map((image) => image.imageId).sort(), [1, 2, 3], 'the images that finished, the held ones not yet')
      t.match(early.find((image) => image.imageId === 3), { itemId: 1, url: origin.url('/status/404'), status: 'FAILURE', error: { type: 'HTTP_ERROR', httpStatus: 404 } })
      t.match(early.find((image) => image.imageId === 1), { itemId: 1, status: 'SUCCESS', location: `/v1/dumps/${requestId}/images/1`, contentType: 'image/png' })

      // resume after the last event seen, then let the held images finish
      const lastSeen = before.events.at(-1)!.id!
      const rest = readEvents(url, { ...auth, 'last-event-id': lastSeen })
      origin.release(hold)
      const after = await rest
      t.equal(after.how, 'ended', 'the server ends the stream after complete')
      const imagesAfter = dataOf(after.events, 'image')
      t.same(imagesAfter.map((image) => image.imageId).sort(), [4, 5], 'the rest, and only the rest')
      t.equal(after.events[0]!.event, 'progress', 'a resumed stream starts with the progress as of its id')
      t.equal(after.events[0]!.id, lastSeen)
      t.equal(JSON.parse(after.events[0]!.data).done, 3)
      const complete = after.events.at(-1)!
      t.equal(complete.event, 'complete')
      t.same(JSON.parse(complete.data), { requestId, status: 'PARTIAL', progress: { total: 5, done: 5, succeeded: 4, failed: 1 } })
      const imageIds = ids([...before.events, ...after.events].filter((event) => event.event === 'image'))
      t.same(imageIds, [1, 2, 3, 4, 5], 'outcomes are numbered 1..5 in the order they were recorded')
      t.equal(Number(complete.id), 6, 'complete is one past the last outcome')
    })

    t.test('after completion: the whole history, and Last-Event-ID from the middle misses nothing and repeats nothing', async (t) => {
      const items: TestItem[] = [{ name: 'Done', images: Array.from({ length: 8 }, (_, i) => origin.url(i % 3 === 2 ? `/status/${500 + i}` : `/png/${20 + i}`)) }]
      const done = await postDump(app, token, 'json', items)
      t.equal(done.statusCode, 200)
      const { requestId } = done.json()
      const url = `${base}/v1/dumps/${requestId}/events`

      const whole = await readEvents(url, auth)
      t.equal(whole.how, 'ended')
      const images = whole.events.filter((event) => event.event === 'image')
      t.equal(images.length, 8, 'one image event per image')
      t.same(dataOf(whole.events, 'image').map((image) => image.imageId).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8])
      const eventIds = ids(whole.events)
      t.ok(eventIds.every((id, i) => i === 0 || id >= eventIds[i - 1]!), 'ids never go back')
      t.equal(whole.events.at(-1)!.event, 'complete')
      t.equal(dataOf(whole.events, 'complete')[0].status, 'PARTIAL')

      for (const middle of [1, 4, 7]) {
        const from = images[middle - 1]!.id!
        const resumed = await readEvents(url, { ...auth, 'last-event-id': from })
        const seen = images.slice(0, middle).map((event) => JSON.parse(event.data).imageId)
        const got = dataOf(resumed.events, 'image').map((image) => image.imageId)
        t.same([...seen, ...got].sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8], `after event ${from}: nothing missed`)
        t.equal(new Set([...seen, ...got]).size, 8, `after event ${from}: nothing repeated`)
        t.same(JSON.parse(resumed.events[0]!.data).done, middle, 'its first progress counts what came before')
        t.equal(resumed.events.at(-1)!.event, 'complete')
      }

      const over = await readEvents(url, { ...auth, 'last-event-id': whole.events.at(-1)!.id! })
      t.equal(over.status, 204, 'after complete there is nothing more: 204 tells an EventSource to stop')
    })

    t.test('a real EventSource follows to complete and stops at the 204 of its reconnection', async (t) => {
      const { requestId } = (await postDump(app, token, 'json', [{ name: 'ES', images: [origin.url('/png/40'), origin.url('/png/41')] }])).json()
      const seen: string[] = []
      let requests = 0
      const source = new EventSource(`${base}/v1/dumps/${requestId}/events`, {
        fetch: (input, init) => {
          requests++
          return fetch(input, { ...init, headers: { ...init?.headers, ...auth } })
        }
      })
      await new Promise<void>((resolve, reject) => {
        for (const name of ['progress', 'image', 'complete']) source.addEventListener(name, (event) => { seen.push(`${name}:${event.lastEventId}`) })
        source.onerror = () => {
          // the reconnection after complete is answered 204: the source closes for good
          if (source.readyState === EventSource.CLOSED) resolve()
        }
        setTimeout(() => reject(new Error(`no end after ${seen.join(' ')}`)), 20_000).unref()
      })
      t.same(seen.filter((name) => name.startsWith('image')).length, 2)
      t.equal(seen.at(-1), 'complete:3')
      t.equal(requests, 2, 'one stream, and one reconnection that was told the stream is over')
    })

    t.test('XML dumps get their events in XML', async (t) => {
      const { requestId } = JSON.parse((await postDump(app, token, 'xml', [{ name: 'X', images: [origin.url('/png/50')] }], { accept: 'application/json' })).body)
      const read = await readEvents(`${base}/v1/dumps/${requestId}/events`, auth)
      t.match(read.events.find((event) => event.event === 'image')!.data, /^<\?xml version="1.0" encoding="UTF-8"\?><image><itemId>1<\/itemId><imageId>1<\/imageId>.*<status>SUCCESS<\/status>/)
      t.match(read.events.at(-1)!.data, /<complete><requestId>\d+<\/requestId><status>SUCCESS<\/status>/)
    })

    t.test('refused: no token, another user\'s dump, an unknown dump, a bad or unknown Last-Event-ID', async (t) => {
      const hold = `events-refused-${engine}`
      const { requestId } = (await postDump(app, token, 'json', [{ name: 'R', images: [origin.url(`/held/${hold}/png/60`)] }], { prefer: 'respond-async' })).json()
      t.teardown(() => origin.release(hold))
      const url = `${base}/v1/dumps/${requestId}/events`
      t.equal((await readEvents(url, {})).status, 401)
      const other = await login(app, sampleUsers.silver.username, sampleUsers.silver.password)
      t.equal((await readEvents(url, { authorization: `Bearer ${other}` })).status, 404, "another user's dump does not exist for them")
      t.equal((await readEvents(`${base}/v1/dumps/999999/events`, auth)).status, 404)
      for (const bad of ['abc', '-1', '01', '1.5', '99999999999', '1, 2', '3x', '0x10']) {
        const read = await readEvents(url, { ...auth, 'last-event-id': bad })
        t.equal(read.status, 400, `Last-Event-ID ${bad}`)
        t.match(JSON.parse(read.text).message, /Last-Event-ID/)
      }
      const ahead = await readEvents(url, { ...auth, 'last-event-id': '7' })
      t.equal(ahead.status, 400, 'an id this running dump never sent')
      t.match(JSON.parse(ahead.text).message, /not an event this dump's stream has sent/)
    })

    t.test('each user holds a bounded number of streams; closing the app ends them', async (t) => {
      const agent = new Agent()
      t.teardown(() => agent.destroy())
      const hold = `events-limit-${engine}`
      const { requestId } = (await postDump(app, token, 'json', [{ name: 'L', images: [origin.url(`/held/${hold}/png/70`)] }], { prefer: 'respond-async' })).json()
      const url = `${base}/v1/dumps/${requestId}/events`
      const open = await Promise.all([1, 2, 3].map(async () => {
        const controller = new AbortController()
        const response = await undiciFetch(url, { headers: auth, signal: controller.signal, dispatcher: agent })
        t.equal(response.status, 200)
        return { controller, response }
      }))
      const fourth = await readEvents(url, auth, undefined, agent)
      t.equal(fourth.status, 429)
      t.equal(fourth.headers.get('retry-after'), '5')
      t.match(JSON.parse(fourth.text).message, /too many event streams/)
      // one closes: a slot is free again once the server saw it go
      open[0]!.controller.abort()
      let again
      for (let attempt = 0; attempt < 200; attempt++) {
        again = await readEvents(url, auth, () => true, agent)
        if (again.status !== 429) break
        await new Promise((resolve) => setImmediate(resolve))
      }
      t.equal(again?.status, 200, 'a closed stream frees its slot')
      origin.release(hold)
      for (const { response } of open.slice(1)) await response.text()
    })
  })
}

t.test('the app closes while a stream of a running dump is open: the stream ends, the close does not wait for the client', async (t) => {
  const { app } = await buildTestApp(t, 'sqlite')
  const base = await listen(app)
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)
  const hold = 'events-close'
  const { requestId } = (await postDump(app, token, 'json', [{ name: 'C', images: [origin.url(`/held/${hold}/png/80`)] }], { prefer: 'respond-async' })).json()
  const response = await fetch(`${base}/v1/dumps/${requestId}/events`, { headers: { authorization: `Bearer ${token}` } })
  const reader = response.body!.getReader()
  const first = new TextDecoder().decode((await reader.read()).value)
  t.match(first, /retry: 2000/, 'the stream is open')
  const closing = app.close()
  // the dump itself is waited for (it runs in the background); the stream is not
  let rest = ''
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value)
  t.pass('the stream ended while the dump was still held')
  origin.release(hold)
  await closing
  t.notMatch(rest, /event: complete/, 'ended by the close, not by the dump')
})

t.test('mysql: a stream on one instance follows a dump running on another', async (t) => {
  if (process.env.MYSQL_URL === undefined || process.env.MYSQL_URL === '') {
    t.comment('skipped: MYSQL_URL is not set (instances share a database only on MySQL)')
    return
  }
  const { createTestDatabase } = await import('../helpers/db.js')
  const database = await createTestDatabase('mysql')
  t.teardown(() => database.drop())
  const { mkdtemp, rm } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-events-'))
  t.teardown(() => rm(storageDir, { recursive: true, force: true }))
  const env = { STORAGE_DIR: storageDir, EVENTS_POLL_MS: '100' }
  const runner = (await buildTestApp(t, 'mysql', env, database)).app
  const watcher = (await buildTestApp(t, 'mysql', env, database)).app
  const base = await listen(watcher)
  const token = await login(runner, sampleUsers.gold.username, sampleUsers.gold.password)
  const hold = 'events-instances'
  const items = [{ name: 'Elsewhere', images: [origin.url('/png/90'), origin.url(`/held/${hold}/png/91`), origin.url(`/held/${hold}/png/92`)] }]
  const { requestId } = (await postDump(runner, token, 'json', items, { prefer: 'respond-async' })).json()

  // the watcher has no run of this dump: it sees the first outcome only through the database
  const reading = readEvents(`${base}/v1/dumps/${requestId}/events`, { authorization: `Bearer ${token}` }, (events) => {
    if (dataOf(events, 'image').length === 1) origin.release(hold)
    return false
  })
  const read = await reading
  t.equal(read.how, 'ended')
  t.same(dataOf(read.events, 'image').map((image) => image.imageId).sort(), [1, 2, 3], 'each image once')
  t.equal(dataOf(read.events, 'image')[0].imageId, 1, 'the image that was not held came first, before the others were released')
  t.same(dataOf(read.events, 'complete'), [{ requestId, status: 'SUCCESS', progress: { total: 3, done: 3, succeeded: 3, failed: 0 } }])
})
