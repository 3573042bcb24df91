/**
 * Clients that hang up while their dump is downloading. The dump goes on (its images and
 * its record are the user's), and once it is recorded nothing of the request is held any
 * more: no plugin keeps a request, its body or its batch past its end, whether it was
 * answered, aborted or timed out.
 */
import t from 'tap'
import net from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import type { IncomingMessage } from 'node:http'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { jsonBatch } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { listen } from '../hostile/harness.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const DUMPS = 6
const IMAGES = 40

t.test('an aborted dump is completed, then forgotten', async (t) => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const { app } = await buildTestApp(t, 'sqlite')
  // Node's request object: whatever holds Fastify's request (or its body) holds this too
  const requests: Array<WeakRef<IncomingMessage>> = []
  app.server.prependListener('request', (request: IncomingMessage) => { if (request.url === '/v1/dumps') requests.push(new WeakRef(request)) })
  const port = await listen(app)
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)

  // each body about 320 KB: the URLs are long, so that what a leak would keep is large
  const pad = 'p'.repeat(8000)
  const sockets = Array.from({ length: DUMPS }, (_, d) => {
    const body = jsonBatch([{ name: `Dump ${d}`, images: Array.from({ length: IMAGES }, (_, i) => origin.url(`/held/aborted/png/${i + 1}?pad=${pad}&d=${d}`)) }])
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(`POST /v1/dumps HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    })
    socket.on('error', () => {})
    return socket
  })
  // every dump admitted and downloading: its first images have reached the origin
  await origin.waitForRequests(DUMPS)
  for (const socket of sockets) socket.destroy()
  origin.release('aborted')

  // The dumps finish without their clients: wait for their records to be complete.
  const deadline = Date.now() + 30_000
  for (;;) {
    const rows = await app.persistence.db.selectFrom('requests').select('status').execute()
    if (rows.length === DUMPS && rows.every((row) => Number(row.status) === 1)) break
    if (Date.now() > deadline) throw new Error(`the aborted dumps were not recorded: ${JSON.stringify(rows)}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.equal(requests.length, DUMPS, 'every dump was seen')

  // Let the handlers unwind, then collect: none of the requests may still be reachable.
  await new Promise((resolve) => setImmediate(resolve))
  for (let i = 0; i < 5 && requests.some((ref) => ref.deref() !== undefined); i++) {
    await new Promise((resolve) => setImmediate(resolve))
    gc()
  }
  t.equal(requests.filter((ref) => ref.deref() !== undefined).length, 0, 'no request outlives its dump')
})
