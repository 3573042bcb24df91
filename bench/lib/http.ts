/**
 * A minimal HTTP client for the harness: node:http with a new connection per request, so
 * nothing the harness does is pooled or kept alive between measurements.
 */
import { request as httpRequest } from 'node:http'

export interface HttpResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: Buffer
  /** from just before the request was written to the last byte of the answer */
  ms: number
}

export async function request (method: string, url: string, headers: Record<string, string> = {}, body?: Buffer | string): Promise<HttpResponse> {
  const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body)
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, {
      method,
      agent: false,
      headers: { ...headers, ...(payload === undefined ? {} : { 'content-length': String(payload.length) }) }
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.once('error', reject)
      res.once('end', () => {
        const ms = performance.now() - started
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ms })
      })
    })
    req.once('error', reject)
    const started = performance.now()
    req.end(payload)
  })
}

/** True once something answers HTTP at `url` with `status`. */
export async function answers (url: string, status = 200): Promise<boolean> {
  try {
    return (await request('GET', url)).status === status
  } catch {
    return false
  }
}

/** True once anything answers HTTP at `url`, whatever the status. */
export async function reachable (url: string): Promise<boolean> {
  try {
    await request('GET', url)
    return true
  } catch {
    return false
  }
}
