import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { createFileWriterThread } from '../../../lib/object-store/file-writer-thread.js'
import { runScript } from '../../helpers/command.js'
import { filesUnder } from '../../helpers/dumps.js'

const root = fileURLToPath(new URL('../../..', import.meta.url))

async function folder (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'file-writer-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

function writerFor (t: Test) {
  const writer = createFileWriterThread()
  t.teardown(() => writer.close())
  return writer
}

/** What `promise` rejects with; undefined when it resolves. */
async function failureOf (promise: Promise<unknown>): Promise<NodeJS.ErrnoException | undefined> {
  return await promise.then(() => undefined, (err: NodeJS.ErrnoException) => err)
}

t.test('a file is written whole under its name, its folder made when missing, no temporary file left', async (t) => {
  const dir = await folder(t)
  const writer = writerFor(t)
  await writer.write(join(dir, '1', '42', '7.png'), [Buffer.from('0123'), Buffer.from('456789')], 10)
  t.equal(await readFile(join(dir, '1', '42', '7.png'), 'latin1'), '0123456789', 'the chunks, in order')
  t.same(await filesUnder(dir), ['1/42/7.png'], 'nothing else')
  t.equal(writer.pending, 0)
})

t.test('the files of one turn all land, each with its own bytes', async (t) => {
  const dir = await folder(t)
  const writer = writerFor(t)
  const files = Array.from({ length: 300 }, (_, i) => ({ file: join(dir, String(i % 3), `${i}.png`), bytes: Buffer.from(`image ${i}`) }))
  const writes = files.map(({ file, bytes }) => writer.write(file, [bytes], bytes.length))
  t.equal(writer.pending, 300, 'all pending at once')
  await Promise.all(writes)
  for (const { file, bytes } of files) t.same(await readFile(file), bytes, file.slice(dir.length))
  t.equal((await filesUnder(dir)).length, 300, 'and nothing else')
})

t.test('a file that cannot be written fails with its errno code, and leaves nothing', async (t) => {
  const dir = await folder(t)
  const writer = writerFor(t)
  // a file where the folder should be
  await writeFile(join(dir, 'blocked'), 'a file, not a folder')
  const notDir = await failureOf(writer.write(join(dir, 'blocked', '1.png'), [Buffer.from('x')], 1))
  t.equal(notDir?.code, 'ENOTDIR', 'the open failed: ENOTDIR')
  // a folder where the file should be: written, then the rename fails
  await mkdir(join(dir, 'taken', '2.png'), { recursive: true })
  const isDir = await failureOf(writer.write(join(dir, 'taken', '2.png'), [Buffer.from('x')], 1))
  t.equal(isDir?.code, 'EISDIR', 'the rename failed: EISDIR')
  t.same(await filesUnder(dir), ['blocked'], 'no temporary file left by either')
  await writer.write(join(dir, 'fine', '3.png'), [Buffer.from('ok')], 2)
  t.equal(await readFile(join(dir, 'fine', '3.png'), 'latin1'), 'ok', 'the next file is written as usual')
})

t.test('a length that is not the chunks\' is refused before anything is written', async (t) => {
  const dir = await folder(t)
  const writer = writerFor(t)
  await t.rejects(writer.write(join(dir, '1.png'), [Buffer.from('abc')], 5), RangeError)
  t.same(await filesUnder(dir), [])
})

t.test('close waits for the files being written; a write after close starts again', async (t) => {
  const dir = await folder(t)
  const writer = createFileWriterThread()
  const writes = Array.from({ length: 50 }, (_, i) => writer.write(join(dir, `${i}.png`), [Buffer.from(String(i))], String(i).length))
  await writer.close()
  t.equal(writer.pending, 0, 'nothing pending once closed')
  t.equal((await filesUnder(dir)).length, 50, 'every file written before close resolved')
  await Promise.all(writes)
  await writer.write(join(dir, 'after.png'), [Buffer.from('after')], 5)
  t.equal(await readFile(join(dir, 'after.png'), 'latin1'), 'after')
  await writer.close()
})

t.test('remove takes files away in one job; a file already gone is no error, another failure is', async (t) => {
  const dir = await folder(t)
  const writer = writerFor(t)
  await Promise.all(['a', 'b', 'c'].map((name) => writer.write(join(dir, `${name}.png`), [Buffer.from(name)], 1)))
  await writer.remove([join(dir, 'a.png'), join(dir, 'gone.png'), join(dir, 'b.png')])
  t.same(await filesUnder(dir), ['c.png'], 'the two files went; the missing one was no error')
  await mkdir(join(dir, 'folder.png'))
  const failure = await failureOf(writer.remove([join(dir, 'folder.png')]))
  t.ok(failure?.code === 'EISDIR' || failure?.code === 'EPERM', `a folder is not a file: ${failure?.code}`)
})

t.test('the thread keeps a process alive while a file is being written, and not once it is idle', async (t) => {
  const dir = await folder(t)
  // A child process starts writes without awaiting them and never closes the writer: it
  // must write every file, then exit by itself.
  const script = `
    import { createFileWriterThread } from './lib/object-store/file-writer-thread.ts'
    const writer = createFileWriterThread()
    await writer.write(${JSON.stringify(join(dir, 'first.png'))}, [Buffer.from('first')], 5)
    for (let i = 0; i < 20; i++) void writer.write(${JSON.stringify(dir)} + '/' + i + '.png', [Buffer.from('later')], 5)
  `
  const { code, signal, stderr } = await runScript(script, root)
  t.equal(signal, null, 'the process was not killed after waiting for it to end')
  t.equal(code, 0, `it exited by itself ${stderr}`)
  t.equal((await filesUnder(dir)).length, 21, 'after writing every file, the ones not awaited too')
})
