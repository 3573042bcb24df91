/**
 * Whole files written on a thread of their own: the file store's way to store an object
 * whose bytes are all in hand (most images: one write batch or less).
 *
 * Why a thread: through libuv's pool, a small image costs four hand-offs from the event
 * loop and back (open, write, close, rename), and on a machine with few cores each
 * hand-off wakes a pool thread that competes with the event loop for a CPU. That, not the
 * system calls, was the largest share of the service's own work per image in the profiles
 * (BENCHMARKS.md). Here the event loop posts the jobs of one turn as one message; the
 * thread makes the same calls synchronously, in order, and answers the whole batch with
 * one message. The guarantee is the file store's: the bytes go to `<file>.part`, renamed
 * to `<file>` once complete, so a crash at any moment leaves a temporary file or the whole
 * object, never half of one under its name.
 *
 * A slow or hung disk stalls this thread, never the event loop (requests, health checks
 * and timeouts go on); jobs then wait here, as they would in libuv's pool. If the thread
 * dies, the jobs it held fail with EIO and the next job starts a new thread.
 *
 * The thread's code is a string evaluated as CommonJS, not a module file: it then runs
 * the same from dist/, from the TypeScript sources under a loader, and inside a host
 * application or a bundle, with nothing to resolve. It is kept to the few calls it makes.
 */
import { Worker } from 'node:worker_threads'

const THREAD_SOURCE = `
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { parentPort } = require('node:worker_threads')

function openPart (part) {
  try {
    return fs.openSync(part, 'w')
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
  }
  // the folder is new (or was removed meanwhile): make it, then open again
  fs.mkdirSync(path.dirname(part), { recursive: true })
  return fs.openSync(part, 'w')
}

function put (file, bytes) {
  const part = file + '.part'
  const fd = openPart(part)
  try {
    for (let at = 0; at < bytes.length;) {
      const written = fs.writeSync(fd, bytes, at)
      if (written === 0) throw Object.assign(new Error('short write'), { code: 'EIO' })
      at += written
    }
    fs.closeSync(fd)
  } catch (err) {
    try { fs.closeSync(fd) } catch {}
    try { fs.unlinkSync(part) } catch {}
    throw err
  }
  try {
    fs.renameSync(part, file)
  } catch (err) {
    try { fs.unlinkSync(part) } catch {}
    throw err
  }
}

function remove (files) {
  for (const file of files) {
    try {
      fs.unlinkSync(file)
    } catch (err) {
      // removing is idempotent: a file already gone is no error
      if (err.code !== 'ENOENT') throw err
    }
  }
}

parentPort.on('message', (batch) => {
  const done = []
  const failed = []
  const all = new Uint8Array(batch.bytes)
  let start = 0
  for (let i = 0; i < batch.puts.length; i++) {
    const end = batch.ends[i]
    try {
      put(batch.files[i], all.subarray(start, end))
      done.push(batch.puts[i])
    } catch (err) {
      failed.push([batch.puts[i], (err && err.code) || 'EIO', String((err && err.message) || err)])
    }
    start = end
  }
  for (const removal of batch.removals) {
    try {
      remove(removal.files)
      done.push(removal.id)
    } catch (err) {
      failed.push([removal.id, (err && err.code) || 'EIO', String((err && err.message) || err)])
    }
  }
  // The buffer goes back to be dropped there: this thread allocates almost nothing, so its
  // garbage collector would rarely run and let tens of MiB of written buffers pile up.
  parentPort.postMessage({ done, failed, bytes: batch.bytes }, [batch.bytes])
})
`

/** A file to write: every byte of it, still in the caller's chunks until the batch is sent. */
interface Put {
  id: number
  file: string
  chunks: readonly Uint8Array[]
  length: number
}

/** Files to remove, as one job. */
interface Removal {
  id: number
  files: readonly string[]
}

/**
 * What goes to the thread for one event-loop turn: the files' bytes copied one after the
 * other into one buffer, which is moved to the thread rather than cloned, and plain arrays,
 * cheaper to pass than an object per file.
 */
interface Batch {
  puts: number[]
  files: string[]
  /** where each file's bytes end in `bytes` */
  ends: number[]
  bytes: ArrayBuffer
  removals: Removal[]
}

/** What the thread answers: the jobs done, and those that failed with [id, errno code, message]. */
interface Answer {
  done: number[]
  failed: Array<[number, string, string]>
  /** the batch's buffer, handed back so that the event loop's collector frees it */
  bytes: ArrayBuffer
}

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
  /** the thread the job was posted to; undefined while queued */
  thread?: Worker
}

/** An error as fs would give it: `code` is what ioFailure and the callers read. */
function fsError (code: string, message: string, cause?: unknown): NodeJS.ErrnoException {
  return Object.assign(new Error(message, cause === undefined ? undefined : { cause }), { code })
}

export function createFileWriterThread () {
  let thread: Worker | undefined
  let puts: Put[] = []
  let removals: Removal[] = []
  let nextId = 1
  const waiters = new Map<number, Waiter>()
  // close() calls waiting for every job to be answered
  let drainers: Array<() => void> = []

  /** Once no job is left: lets the process exit without the thread, and tells close(). */
  function settled (): void {
    if (waiters.size > 0) return
    thread?.unref()
    if (drainers.length === 0) return
    const waiting = drainers
    drainers = []
    for (const resolve of waiting) resolve()
  }

  function start (): Worker {
    // execArgv: none of the parent's flags or loaders (a profiler, tsx): this code needs none
    const started = new Worker(THREAD_SOURCE, { eval: true, execArgv: [], resourceLimits: { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 } })
    started.on('message', ({ done, failed }: Answer) => {
      for (const id of done) {
        const waiter = waiters.get(id)
        waiters.delete(id)
        waiter?.resolve()
      }
      for (const [id, code, message] of failed) {
        const waiter = waiters.get(id)
        waiters.delete(id)
        waiter?.reject(fsError(code, message))
      }
      settled()
    })
    const lost = (cause: unknown): void => {
      if (thread === started) thread = undefined
      for (const [id, waiter] of waiters) {
        if (waiter.thread !== started) continue
        waiters.delete(id)
        waiter.reject(fsError('EIO', 'the file-writing thread stopped before the file was written', cause))
      }
      settled()
    }
    started.on('error', lost)
    started.on('exit', (code) => { lost(new Error(`exit code ${code}`)) })
    // Idle, it keeps no process alive (flush refs it while jobs are out). After the
    // listeners: adding a 'message' listener refs the thread's port again.
    started.unref()
    return started
  }

  function flush (): void {
    const batch: Batch = { puts: [], files: [], ends: [], bytes: new ArrayBuffer(puts.reduce((sum, put) => sum + put.length, 0)), removals }
    const all = new Uint8Array(batch.bytes)
    let at = 0
    for (const put of puts) {
      for (const chunk of put.chunks) {
        all.set(chunk, at)
        at += chunk.length
      }
      batch.puts.push(put.id)
      batch.files.push(put.file)
      batch.ends.push(at)
    }
    puts = []
    removals = []
    const ids = [...batch.puts, ...batch.removals.map((removal) => removal.id)]
    try {
      thread ??= start()
      for (const id of ids) waiters.get(id)!.thread = thread
      thread.postMessage(batch, [batch.bytes])
      // a job out keeps the process alive until it is answered, as an fs call would
      thread.ref()
    } catch (err) {
      for (const id of ids) {
        waiters.get(id)?.reject(fsError('EIO', 'the file-writing thread could not take the job', err))
        waiters.delete(id)
      }
      settled()
    }
  }

  /** A job's promise, sent with the others of this event-loop turn. */
  function enqueue (id: number): Promise<void> {
    const done = new Promise<void>((resolve, reject) => { waiters.set(id, { resolve, reject }) })
    // the turn's first job schedules the batch; the others join it
    if (puts.length + removals.length === 1) setImmediate(flush)
    return done
  }

  return {
    /**
     * Writes `chunks` (`length` bytes in all) to `<file>.part`, making its folder when
     * missing, then renames it to `file`. Rejects with an fs-style error (`code`) and
     * leaves no temporary file when it cannot. The chunks are copied at the end of this
     * event-loop turn, with the others of the turn; they must not change before.
     */
    write (file: string, chunks: readonly Uint8Array[], length: number): Promise<void> {
      const sum = chunks.reduce((total, chunk) => total + chunk.length, 0)
      if (sum !== length) return Promise.reject(new RangeError(`the chunks hold ${sum} bytes, not ${length}`))
      const id = nextId++
      puts.push({ id, file, chunks, length })
      return enqueue(id)
    },

    /** Removes `files`; one already gone is no error. Rejects with the first other failure. */
    remove (files: readonly string[]): Promise<void> {
      const id = nextId++
      removals.push({ id, files })
      return enqueue(id)
    },

    /** Files being written now (queued or on the thread). */
    get pending (): number {
      return waiters.size
    },

    /** Waits for the files being written, then stops the thread; a later write starts another. */
    async close (): Promise<void> {
      if (waiters.size > 0) await new Promise<void>((resolve) => { drainers.push(resolve) })
      const stopping = thread
      thread = undefined
      await stopping?.terminate()
    }
  }
}

export type FileWriterThread = ReturnType<typeof createFileWriterThread>
