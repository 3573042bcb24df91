import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import {
  UnsafeStorageTargetError,
  createStorageLayout,
  imagePath,
  partPath,
  storedPath,
  type StorageTarget
} from '../../lib/storage-layout.js'
import { filesUnder } from '../helpers/dumps.js'

async function storageRoot (t: Test): Promise<string> {
  const parent = await mkdtemp(join(tmpdir(), 'storage-layout-'))
  t.teardown(() => rm(parent, { recursive: true, force: true }))
  const root = join(parent, 'images')
  await mkdir(root)
  return root
}

/** Creates files (relative to root) with some content. */
async function put (root: string, ...files: string[]): Promise<void> {
  for (const file of files) {
    await mkdir(join(root, file, '..'), { recursive: true })
    await writeFile(join(root, file), 'x')
  }
}

t.test('an image of a dump: <root>/<userid>/<requestId>/<imageId>.<ext>, written first as .part', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  t.equal(layout.root, root)
  const target = layout.dumpTarget(3, 42, 7)
  t.same(target, { dir: '3/42', name: '7' })
  const resolved = layout.resolve(target)
  t.same(resolved, { dir: join(root, '3', '42'), rel: '3/42', name: '7' })
  t.equal(partPath(resolved), join(root, '3', '42', '7.part'))
  t.equal(imagePath(resolved, 'png'), join(root, '3', '42', '7.png'))
  t.equal(storedPath(resolved, 'png'), '3/42/7.png', 'reported relative to the root, with / separators')
})

t.test('a relative storageDir is made absolute', async (t) => {
  const layout = createStorageLayout('some/images')
  t.equal(layout.root, join(process.cwd(), 'some', 'images'))
})

t.test('targets in the root itself and folders that only mention dots are fine', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  const top = layout.resolve({ dir: '', name: '1' })
  t.same(top, { dir: root, rel: '', name: '1' })
  t.equal(storedPath(top, 'gif'), '1.gif', 'no leading slash')
  t.same(layout.resolve({ dir: '1/../2', name: 'a.b-c_d' }), { dir: join(root, '2'), rel: '2', name: 'a.b-c_d' })
})

t.test('unsafe targets are refused', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  const refused: Array<[unknown, RegExp]> = [
    [{ dir: '../x', name: '1' }, /outside the storage directory/],
    [{ dir: '..', name: '1' }, /outside/],
    [{ dir: '1/../../x', name: '1' }, /outside/],
    [{ dir: join(root, '..'), name: '1' }, /outside/],
    [{ dir: '/tmp', name: '1' }, /outside/],
    [{ dir: '1\0', name: '1' }, /invalid storage directory/],
    [{ dir: '1', name: '../../x' }, /invalid storage file name/],
    [{ dir: '1', name: 'a/b' }, /file name/],
    [{ dir: '1', name: 'a\\b' }, /file name/],
    [{ dir: '1', name: '..' }, /file name/],
    [{ dir: '1', name: '.hidden' }, /file name/],
    [{ dir: '1', name: '' }, /file name/],
    [{ dir: '1', name: 'x'.repeat(129) }, /file name/],
    [{ dir: '1', name: 'a\0' }, /file name/],
    [null, /invalid storage target/],
    ['1/2', /invalid storage target/],
    [{ dir: 1, name: '1' }, /invalid storage target/],
    [{ dir: '1' }, /invalid storage target/]
  ]
  for (const [target, message] of refused) {
    const error = (() => {
      try {
        layout.resolve(target as StorageTarget)
      } catch (error) {
        return error
      }
    })()
    t.type(error, UnsafeStorageTargetError, `${JSON.stringify(target)} is refused`)
    t.match((error as Error | undefined)?.message, message, 'saying why')
  }
})

t.test('findImage probes the stored names of an image, whatever its type', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  await put(root, '3/42/1.jpg', '3/42/2.avif', '3/42/3.part', '3/42/4.txt', '3/43/5.png')
  t.same(await layout.findImage(3, 42, 1), { file: '3/42/1.jpg', contentType: 'image/jpeg' })
  t.same(await layout.findImage(3, 42, 2), { file: '3/42/2.avif', contentType: 'image/avif' })
  t.equal(await layout.findImage(3, 42, 3), undefined, 'an image still being written is not there yet')
  t.equal(await layout.findImage(3, 42, 4), undefined, 'a name with no image extension is not an image')
  t.equal(await layout.findImage(3, 42, 5), undefined, "another dump's image is not this dump's")
  t.equal(await layout.findImage(4, 42, 1), undefined, "another user's folder is another folder")
  t.equal(await layout.findImage(3, 99, 1), undefined, 'a dump without a folder has no images')
  for (const [userid, requestId, imageId] of [[-1, 42, 1], [3, 1.5, 1], [3, 42, NaN], [3, 42, -1]]) {
    t.equal(await layout.findImage(userid!, requestId!, imageId!), undefined, `ids ${userid}/${requestId}/${imageId} name no file`)
  }
})

t.test('removeDump removes every file of one dump and nothing else', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  await put(root, '3/42/1.png', '3/42/2.part', '3/43/1.png', '4/42/1.png')
  await layout.removeDump(3, 42)
  t.same(await readdir(join(root, '3', '42')), [], 'its folder is empty, and still there')
  t.same(await filesUnder(root), ['3/43/1.png', '4/42/1.png'])
  await layout.removeDump(3, 99)
  t.pass('a dump without a folder has nothing to remove')
})

t.test('keepOnly removes temporary files and the files of every image not kept', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  await put(root, '3/42/1.png', '3/42/2.jpg', '3/42/3.part', '3/42/4.png', '3/42/12.png', '3/43/2.jpg', '3/43/5.part')
  t.equal(await layout.keepOnly(3, 42, [2, 1]), true)
  t.same(await filesUnder(root), ['3/42/1.png', '3/42/2.jpg', '3/43/2.jpg', '3/43/5.part'],
    'images 1 and 2 stay; 4, 12 and every .part of the dump are gone (1 is not 12), and other dumps are untouched')
  t.equal(await layout.keepOnly(3, 42, []), true)
  t.same(await filesUnder(root), ['3/43/2.jpg', '3/43/5.part'], 'keeping nothing empties the folder')
  t.equal(await layout.keepOnly(3, 99, [1]), true, 'a dump without a folder has nothing to remove')
  t.equal(await layout.keepOnly(-3, 43, []), false, 'ids that name no folder: refused')
  t.equal(await layout.keepOnly(3, 43.5, []), false)
  t.same(await filesUnder(root), ['3/43/2.jpg', '3/43/5.part'], 'and nothing touched')
})

t.test('a reused image is a hard link to the stored file, under its own name', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  await mkdir(join(root, '3', '42'), { recursive: true })
  await writeFile(join(root, '3', '42', '7.png'), 'earlier bytes')
  const target = layout.resolve(layout.dumpTarget(3, 43, 1))

  t.equal(await layout.linkImage('3/42/7.png', target), '3/43/1.png', 'the new key, its folder made on first need')
  const [earlier, linked] = await Promise.all([stat(join(root, '3', '42', '7.png')), stat(join(root, '3', '43', '1.png'))])
  t.equal(linked.ino, earlier.ino, 'the same bytes, not a copy')
  t.equal(linked.nlink, 2)

  await layout.removeImage('3/42/7.png')
  t.equal(await readFile(join(root, '3', '43', '1.png'), 'utf8'), 'earlier bytes', 'they stay while the new name does')
  t.equal(await layout.linkImage('3/42/7.png', layout.resolve(layout.dumpTarget(3, 44, 1))), undefined, 'a removed file cannot be reused')
  t.same(await filesUnder(join(root, '3')), ['43/1.png'], 'and leaves nothing behind')
})

t.test('a key the layout could not have made is never linked nor removed', async (t) => {
  const root = await storageRoot(t)
  const layout = createStorageLayout(root)
  await put(root, '../outside.png', '3/42/7.png')
  const target = layout.resolve(layout.dumpTarget(3, 43, 1))
  for (const key of ['../outside.png', '/etc/passwd.png', '3/../../outside.png', '3/42/7.exe', '3/42/.hidden.png', '']) {
    t.equal(await layout.linkImage(key, target), undefined, `linkImage(${JSON.stringify(key)})`)
    await layout.removeImage(key)
  }
  t.same(await readdir(join(root, '..')), ['images', 'outside.png'], 'the file outside the root is untouched')
  t.same(await filesUnder(root), ['3/42/7.png'])
})
