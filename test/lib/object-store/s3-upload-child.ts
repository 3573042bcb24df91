/**
 * A process that starts one large upload and never finishes it, for the test that kills it:
 * it builds its store from STORAGE_URL and the AWS_* variables (as the service does), writes
 * BYTES bytes (more than one part) to KEY, prints "written", and waits to be killed.
 */
import { createObjectStore } from '../../../lib/object-store/create-store.js'

const url = process.env.STORAGE_URL
const key = process.env.KEY
const bytes = Number(process.env.BYTES)
if (url === undefined || key === undefined || !Number.isSafeInteger(bytes)) throw new Error('set STORAGE_URL, KEY and BYTES')

const store = await createObjectStore(url, { createFileStore: () => { throw new Error('an s3:// URL is expected') } })
const sink = await store.create(key, { contentType: 'image/png' })
const chunk = Buffer.alloc(64 * 1024, 0x5a)
for (let written = 0; written < bytes; written += chunk.length) await sink.write([chunk], chunk.length)
process.stdout.write('written\n')
// held open until the test kills this process: the upload is never committed
setInterval(() => {}, 60_000)
