// Run by bench/lib/bare-client.ts in a process of its own (plain `node`, no TypeScript
// loader): the least any Node.js service built on undici can do for a batch of URLs. It
// fetches every URL it is sent at once through one undici Agent (as many connections as
// URLs), reads each body to its end and keeps nothing, then answers how long that took.
// No validation, no storage, no database: the floor of this machine, this origin and undici.
import { Agent, request } from 'undici'

if (typeof process.send === 'function') {
  let agent
  process.on('message', async (message) => {
    if (message?.type !== 'fetch') return
    agent ??= new Agent({ connections: message.urls.length })
    const started = performance.now()
    try {
      const bytes = await Promise.all(message.urls.map(async (url) => {
        const { statusCode, body } = await request(url, { dispatcher: agent })
        let length = 0
        for await (const chunk of body) length += chunk.length
        if (statusCode !== 200) throw new Error(`${url} answered ${statusCode}`)
        return length
      }))
      process.send({ type: 'fetched', ms: performance.now() - started, bytes: bytes.reduce((a, b) => a + b, 0) })
    } catch (error) {
      process.send({ type: 'failed', message: String(error) })
    }
  })
}
