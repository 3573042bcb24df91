/**
 * Where `image-dump login` keeps its tokens: one JSON file, readable by its owner only
 * (0600, in a 0700 folder), holding a token per server. IMAGE_DUMP_TOKEN_FILE names another
 * file; the default is $XDG_CONFIG_HOME/image-dump/tokens.json (~/.config/…).
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join } from 'node:path'

export interface StoredToken {
  username: string
  token: string
  /** ms since the epoch */
  expiresAt: number
}

export function tokenFile (env: NodeJS.ProcessEnv = process.env): string {
  if (env['IMAGE_DUMP_TOKEN_FILE'] !== undefined && env['IMAGE_DUMP_TOKEN_FILE'] !== '') return env['IMAGE_DUMP_TOKEN_FILE']
  const config = env['XDG_CONFIG_HOME'] !== undefined && env['XDG_CONFIG_HOME'] !== '' ? env['XDG_CONFIG_HOME'] : join(homedir(), '.config')
  return join(config, 'image-dump', 'tokens.json')
}

async function readAll (file: string): Promise<Record<string, StoredToken>> {
  try {
    const parsed = JSON.parse(await readFile(file, 'utf8')) as unknown
    return typeof parsed === 'object' && parsed !== null ? parsed as Record<string, StoredToken> : {}
  } catch {
    return {}
  }
}

export async function loadToken (file: string, server: string): Promise<StoredToken | undefined> {
  const stored = (await readAll(file))[server]
  return stored !== undefined && typeof stored.token === 'string' ? stored : undefined
}

export async function saveToken (file: string, server: string, token: StoredToken): Promise<void> {
  const all = await readAll(file)
  all[server] = token
  await mkdir(dirname(file), { recursive: true, mode: 0o700 })
  // written whole under another name, then renamed: never a half-written file, never readable by others
  const temporary = `${file}.${process.pid}.tmp`
  await writeFile(temporary, `${JSON.stringify(all, null, 2)}\n`, { mode: 0o600 })
  await chmod(temporary, 0o600)
  await rename(temporary, file)
}
