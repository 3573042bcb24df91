import { Socket } from 'node:net'
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'

export interface SlowBodyGuardOptions {
  /** a body must arrive at least this fast, on average over each window [8192] */
  minBytesPerSecond?: number
  /** how often progress is checked [10 s] */
  windowMs?: number
}

const ANSWER = JSON.stringify({ statusCode: 408, error: 'Request Timeout', message: 'the request body arrived too slowly' })

/**
 * An onRequest hook that ends a request whose body stops arriving or trickles in: every
 * window the socket must have delivered at least `minBytesPerSecond × window` more bytes,
 * until the body is complete. Node only bounds the whole request (requestTimeout), which
 * must stay long enough for a big feed on a slow link; without a rate, one connection
 * sending a byte every few seconds holds its buffered body for that whole time.
 *
 * Progress is read from the socket's byte counter, not from 'data' events, so the body
 * stays untouched for the parser. The answer is written on the socket directly, as Node
 * answers its own request timeouts: the route has not run and cannot answer.
 */
export function slowBodyGuard (options: SlowBodyGuardOptions = {}): onRequestHookHandler {
  const minBytesPerSecond = options.minBytesPerSecond ?? 8192
  const windowMs = options.windowMs ?? 10_000
  const minPerWindow = Math.ceil(minBytesPerSecond * windowMs / 1000)

  return function guardBodyRate (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const raw = request.raw
    const socket = raw.socket
    const hasBody = raw.headers['transfer-encoding'] !== undefined || Number(raw.headers['content-length'] ?? 0) > 0
    // only a real connection has a byte counter (inject's stand-in has none)
    if (!hasBody || raw.complete || !(socket instanceof Socket)) return done()
    let seen = socket.bytesRead
    const timer = setInterval(() => {
      if (raw.complete || socket.destroyed) return stop()
      const now = socket.bytesRead
      if (now - seen >= minPerWindow) {
        seen = now
        return
      }
      stop()
      request.log.info({ received: now, minBytesPerSecond }, 'request body too slow: connection closed')
      if (reply.raw.headersSent) {
        socket.destroy()
        return
      }
      socket.end(`HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${ANSWER.length}\r\n\r\n${ANSWER}`,
        () => socket.destroy())
    }, windowMs)
    timer.unref()
    function stop (): void {
      clearInterval(timer)
      raw.off('close', stop)
      raw.off('end', stop)
    }
    raw.once('close', stop)
    raw.once('end', stop)
    done()
  }
}
