/**
 * The process test/helpers/s3-server.ts starts: s3rver on 127.0.0.1 and a free port, over
 * the folder and bucket given in its environment, telling its parent (IPC) its port and
 * every request it has answered. Run with --openssl-legacy-provider: s3rver makes
 * ListObjectsV2's continuation tokens with DES, which OpenSSL 3 keeps in its legacy provider.
 */
import { createCipheriv } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import S3rver from 's3rver'

const directory = process.env.S3_DIRECTORY
const bucket = process.env.S3_BUCKET
if (directory === undefined || bucket === undefined || process.send === undefined) throw new Error('start me through test/helpers/s3-server.ts')
const send = process.send.bind(process)

let des = true
try {
  createCipheriv('des', Buffer.alloc(8), Buffer.alloc(8))
} catch {
  des = false
}

const s3rver = new S3rver({ directory, silent: true, configureBuckets: [{ name: bucket, configs: [] }] })
await s3rver.configureBuckets()
const handle = s3rver.callback()
const server = createServer((req, res) => {
  res.on('finish', () => {
    send({ type: 'request', method: req.method, url: req.url, headers: req.headers, status: res.statusCode })
  })
  handle(req, res)
})
server.listen(0, '127.0.0.1', () => {
  send({ type: 'ready', port: (server.address() as AddressInfo).port, des })
})
process.on('message', (message: { type: string, id: number }) => {
  // IPC keeps order: every request record sent before this answer has reached the parent
  if (message.type === 'ping') send({ type: 'pong', id: message.id })
})
// the parent's end is this process's end
process.on('disconnect', () => process.exit(0))
