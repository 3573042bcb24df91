/**
 * What each command of `image-dump` does, as functions of a context (the server, the token
 * file, the output streams) that return the exit code; cli/image-dump.ts parses the
 * command line into them.
 */
import { createHash, randomUUID } from 'node:crypto'
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { extname, join } from 'node:path'
import type { DumpResult, ImageResult, Progress } from '../schemas/dump.js'
import { CliError, EXIT, createClient, type Client } from './client.js'
import { followDump } from './follow.js'
import { createProgressView } from './progress.js'
import { loadToken, saveToken } from './token-store.js'

export interface Context {
  server: string
  tokenFile: string
  stdout: NodeJS.WriteStream
  stderr: NodeJS.WriteStream
  /** how often a running dump is asked for its progress when its events stream cannot be had, in ms */
  pollMs: number
}

// what the service takes as the password: its SHA-256, in hex
const sha256Hex = (text: string): string => createHash('sha256').update(text, 'utf8').digest('hex')

const imagesOf = (record: DumpResult): ImageResult[] => record.items.flatMap((item) => item.images)

/** A record's counts: its own `progress` while it runs, else counted from its images. */
export function progressOf (record: DumpResult): Progress {
  if (record.progress !== undefined) return record.progress
  const images = imagesOf(record)
  const succeeded = images.filter((image) => image.status === 'SUCCESS').length
  const failed = images.filter((image) => image.status === 'FAILURE').length
  return { total: images.length, done: succeeded + failed, succeeded, failed }
}

function reasonOf (image: ImageResult): string {
  const error = image.error
  if (error === undefined) return 'failed'
  return error.type === 'HTTP_ERROR' ? `HTTP ${error.httpStatus}` : `${error.code}: ${error.message}`
}

/** The lines that tell what came of a dump: a summary, then each failure with its reason. */
export function describeRecord (record: DumpResult): string {
  const { total, done, succeeded, failed } = progressOf(record)
  const state = record.status === 'PENDING' ? `running, ${done} of ${total} images done` : record.status
  const lines = [`dump ${record.requestId}: ${state}; ${succeeded} of ${total} images stored, ${failed} failed`]
  for (const image of imagesOf(record).filter((i) => i.status === 'FAILURE')) {
    lines.push(`  failed: image ${image.imageId} ${image.url}: ${reasonOf(image)}`)
  }
  return `${lines.join('\n')}\n`
}

const exitCodeOf = (record: DumpResult): number => progressOf(record).failed > 0 ? EXIT.SOME_FAILED : EXIT.OK

async function authenticated (context: Context): Promise<Client> {
  const stored = await loadToken(context.tokenFile, context.server)
  if (stored === undefined) throw new CliError(`not logged in to ${context.server}: run \`image-dump login <username>\``, EXIT.REFUSED)
  if (stored.expiresAt <= Date.now()) throw new CliError(`the token of ${stored.username} for ${context.server} has expired: run \`image-dump login ${stored.username}\``, EXIT.REFUSED)
  return createClient(context.server, stored.token)
}

export async function login (context: Context, username: string, password: string): Promise<number> {
  const client = createClient(context.server)
  const answer = await client.login(username, sha256Hex(password))
  await saveToken(context.tokenFile, context.server, { username, token: answer.access_token, expiresAt: Date.now() + answer.expires_in * 1000 })
  context.stderr.write(`logged in to ${context.server} as ${username} for ${Math.round(answer.expires_in / 60)} minutes (token in ${context.tokenFile})\n`)
  return EXIT.OK
}

/** The media type of a feed file: by its extension, else by its first character. */
export function contentTypeOf (file: string, text: string): string {
  const extension = extname(file).toLowerCase()
  if (extension === '.xml') return 'application/xml'
  if (extension === '.json') return 'application/json'
  return text.trimStart().startsWith('<') ? 'application/xml' : 'application/json'
}

export interface PushOptions {
  async: boolean
  json: boolean
  key?: string
}

export async function push (context: Context, file: string, options: PushOptions): Promise<number> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    throw new CliError(`cannot read ${file}: ${(error as Error).message}`, EXIT.REFUSED)
  }
  const client = await authenticated(context)
  // sent again with the same key, the same feed is the same dump (a retry after a lost answer)
  const key = options.key ?? randomUUID()
  const admitted = await client.push(text, contentTypeOf(file, text), key)
  let record = admitted.body
  const { requestId } = record
  if (options.async) {
    context.stdout.write(options.json ? `${JSON.stringify(record)}\n` : `${requestId}\n`)
    context.stderr.write(`dump ${requestId} admitted; follow it with \`image-dump status ${requestId}\`\n`)
    return EXIT.OK
  }

  const view = createProgressView(context.stderr, requestId, progressOf(record).total)
  try {
    view.update(progressOf(record))
    if (record.status === 'PENDING') await followDump(client, requestId, { pollMs: context.pollMs, onProgress: (progress) => view.update(progress) })
    record = await client.dump(requestId)
    view.update(progressOf(record))
  } catch (error) {
    if (error instanceof CliError) error.message += ` (dump ${requestId} goes on: follow it with \`image-dump status ${requestId}\`)`
    throw error
  } finally {
    view.stop()
  }
  context.stdout.write(options.json ? `${JSON.stringify(record)}\n` : describeRecord(record))
  return exitCodeOf(record)
}

export async function status (context: Context, requestId: number, options: { json: boolean }): Promise<number> {
  const record = await (await authenticated(context)).dump(requestId)
  context.stdout.write(options.json ? `${JSON.stringify(record)}\n` : describeRecord(record))
  return exitCodeOf(record)
}

const EXTENSIONS: Readonly<Record<string, string>> = { 'image/jpeg': 'jpg', 'image/svg+xml': 'svg' }

/** The file name of a stored image, as the service names it: `<imageId>.<extension of its type>`. */
export function fileNameOf (image: ImageResult): string {
  const type = image.contentType ?? ''
  const extension = EXTENSIONS[type] ?? type.replace(/^image\//, '').replace(/[^a-z0-9]/g, '')
  return extension === '' ? String(image.imageId) : `${image.imageId}.${extension}`
}

export async function pull (context: Context, requestId: number, dir: string): Promise<number> {
  const client = await authenticated(context)
  const record = await client.dump(requestId)
  const stored = imagesOf(record).filter((image) => image.status === 'SUCCESS')
  await mkdir(dir, { recursive: true })
  for (const image of stored) {
    const bytes = await client.image(requestId, image.imageId)
    const target = join(dir, fileNameOf(image))
    // written whole, then renamed: an interrupted pull leaves no partial image under its name
    await writeFile(`${target}.part`, bytes)
    await rename(`${target}.part`, target)
    context.stdout.write(`${target}\n`)
  }
  const { total, failed } = progressOf(record)
  const pending = record.status === 'PENDING' ? `; the dump is still running, ${total - progressOf(record).done} images to come` : ''
  context.stderr.write(`dump ${requestId}: ${stored.length} of ${total} images pulled into ${dir}${failed > 0 ? `, ${failed} failed in the dump` : ''}${pending}\n`)
  return failed > 0 || record.status === 'PENDING' ? EXIT.SOME_FAILED : EXIT.OK
}

export async function quota (context: Context, options: { json: boolean }): Promise<number> {
  const usage = await (await authenticated(context)).quota()
  if (options.json) {
    context.stdout.write(`${JSON.stringify(usage)}\n`)
  } else {
    const next = usage.remaining > 0 ? '' : `; the next slot frees in ${usage.resetSeconds} s`
    context.stdout.write(`plan ${usage.plan}: ${usage.used} of ${usage.limit} dumps used in the last ${usage.windowSeconds / 60} minutes, ${usage.remaining} left${next}\n`)
  }
  return EXIT.OK
}
