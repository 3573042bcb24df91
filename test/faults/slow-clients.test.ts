/**
 * Clients that are slow on purpose: a body trickled a byte at a time, a body that stops
 * arriving (parked, holding its buffer), and the one long wait that is allowed — a dump
 * whose downloads take longer than any request timeout.
 *
 * Decisions asserted here:
 * - A request body must keep arriving at a minimum average rate, checked every window; a
 *   body that trickles or stops is answered 408 and its connection closed.
 * - REQUEST_TIMEOUT_MS bounds receiving a request, never the wait for a dump's answer.
 */
import t from 'tap'
import net from 'node:net'
import Fastify from 'fastify'
import { buildTestApp, login, sampleUsers } from '../helpers/app.js'
import { jsonBatch } from '../helpers/dumps.js'
import { startOrigin } from '../helpers/origin.js'
import { listen } from '../hostile/harness.js'
import { slowBodyGuard } from '../../lib/slow-body-guard.js'

interface Exchange {
  /** everything the server sent before it closed the connection */
  answer: string
  /** bytes of body the client had written when the connection closed */
  sent: number
}

/**
 * Sends the head of a POST announcing `length` bytes, then body bytes in `step`-sized pieces
 * every `everyMs` until the server closes the connection or `stopAfter` bytes are sent.
 */
function slowUpload (port: number, path: string, length: number, step: number, everyMs: number, stopAfter = length): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    let sent = 0
    let timer: NodeJS.Timeout | undefined
    const chunks: Buffer[] = []
    const socket = net.connect(port, '127.0.0.1', () => {
      socket.write(`POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`)
      timer = setInterval(() => {
        if (sent >= stopAfter || socket.destroyed) return
        const n = Math.min(step, stopAfter - sent)
        socket.write(Buffer.alloc(n, 0x20))
        sent += n
      }, everyMs)
    })
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', (error: NodeJS.ErrnoException) => { if (error.code !== 'ECONNRESET' && error.code !== 'EPIPE') reject(error) })
    socket.on('close', () => {
      clearInterval(timer)
      resolve({ answer: Buffer.concat(chunks).toString('utf8'), sent })
    })
  })
}

t.test('the slow-body guard', async (t) => {
  const app = Fastify()
  app.addHook('onRequest', slowBodyGuard({ minBytesPerSecond: 10_000, windowMs: 500 }))
  app.post('/upload', async (request) => ({ bytes: JSON.stringify(request.body).length }))
  t.teardown(() => app.close())
  const port = await listen(app)

  t.test('a body trickled one byte at a time is answered 408 and its connection closed', async (t) => {
    const { answer, sent } = await slowUpload(port, '/upload', 100_000, 1, 20)
    t.match(answer, /^HTTP\/1\.1 408 Request Timeout\r\n/)
    t.match(answer, /"message":"the request body arrived too slowly"/)
    t.ok(sent < 100_000, `cut off after ${sent} of 100000 bytes`)
  })

  t.test('a body that stops arriving (parked) is answered 408 and closed', async (t) => {
    const { answer, sent } = await slowUpload(port, '/upload', 1_000_000, 64 * 1024, 10, 900_000)
    t.match(answer, /^HTTP\/1\.1 408 /)
    t.equal(sent, 900_000, 'everything but the last bytes was sent, then nothing')
  })

  t.test('a body arriving fast enough is untouched, however long it takes in all', async (t) => {
    // 8 KiB every 20 ms is about 400 KB/s, well above the 10 KB/s minimum; two windows long
    const body = JSON.stringify({ text: 'x'.repeat(400_000) })
    const { answer } = await new Promise<Exchange>((resolve, reject) => {
      const chunks: Buffer[] = []
      let offset = 0
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.write(`POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`)
        const timer = setInterval(() => {
          socket.write(body.slice(offset, offset + 8192))
          offset += 8192
          if (offset >= body.length) clearInterval(timer)
        }, 20)
      })
      socket.on('data', (chunk: Buffer) => chunks.push(chunk))
      socket.on('error', reject)
      socket.on('close', () => resolve({ answer: Buffer.concat(chunks).toString('utf8'), sent: offset }))
    })
    t.match(answer, /^HTTP\/1\.1 200 /)
  })
})

t.test('REQUEST_TIMEOUT_MS bounds receiving a request, not waiting for a dump', async (t) => {
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  const { app } = await buildTestApp(t, 'sqlite', { REQUEST_TIMEOUT_MS: '1000', DOWNLOAD_TIMEOUT_MS: '60000' })
  const port = await listen(app)
  const token = await login(app, sampleUsers.gold.username, sampleUsers.gold.password)

  const dump = fetch(`http://127.0.0.1:${port}/v1/dumps`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: jsonBatch([{ name: 'Held', images: [origin.url('/held/request-timeout/png/1')] }])
  })
  await origin.waitForRequests(1)
  // A request whose body never comes: Node answers it 408 once REQUEST_TIMEOUT_MS has passed
  // (the body-rate guard's 10 s window is longer), which is the moment to look at the dump.
  const parked = await slowUpload(port, '/v1/auth/token', 1000, 0, 1000, 0)
  t.match(parked.answer, /^HTTP\/1\.1 408 /, 'a request still arriving after REQUEST_TIMEOUT_MS is cut off')

  origin.release('request-timeout')
  const answer = await dump
  t.equal(answer.status, 200, 'the dump that waited longer than REQUEST_TIMEOUT_MS for its download is answered')
  const body = await answer.json() as { status: string }
  t.equal(body.status, 'SUCCESS')
})
