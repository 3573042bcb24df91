/**
 * The baseline: what a catalogue team would script instead of the service,
 * `curl --parallel --parallel-max 64 --remote-name-all` over the same URLs into an empty
 * folder. URLs go through a config file (`-K`), so any number of them fits.
 */
import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { mkdir, readdir, stat } from 'node:fs/promises'
import path from 'node:path'
import { findExecutable } from './net.js'

export const CURL_PARALLEL_MAX = 64

export function findCurl (): string | null {
  return findExecutable('curl')
}

/** e.g. "curl 7.88.1, libcurl/7.88.1 OpenSSL/3.0.19" */
export function curlVersion (bin: string): string {
  const words = (spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout ?? '').split('\n')[0]?.trim().split(/\s+/) ?? []
  return words.length < 2 ? 'curl (version unknown)' : `${words[0]} ${words[1]}, ${words.filter((w) => /^(libcurl|OpenSSL|nghttp2)\//.test(w)).join(' ')}`
}

export function curlArgs (configFile: string, outDir: string, parallelMax = CURL_PARALLEL_MAX): string[] {
  return ['--parallel', '--parallel-max', String(parallelMax), '--remote-name-all', '--output-dir', outDir,
    '--silent', '--show-error', '--no-progress-meter', '--fail', '-K', configFile]
}

/** The children's user and system time from the last line `times` printed ("0m0.033s 0m0.084s"), in ms. */
function childrenCpuMs (stderr: string): number {
  const line = stderr.trim().split('\n').at(-1) ?? ''
  const times = [...line.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60_000 + Number(m[2]) * 1000)
  return times.length === 2 ? times[0]! + times[1]! : Number.NaN
}

export interface CurlOutcome {
  /** process start → exit */
  ms: number
  /** CPU time curl used (user + system), from the shell's `times`; NaN when it could not be read */
  cpuMs: number
  files: number
  bytes: number
}

/** Downloads `urls` into `outDir` (created, must not exist or be empty); throws unless every file arrived. */
export async function curlParallel (bin: string, urls: readonly string[], outDir: string, parallelMax = CURL_PARALLEL_MAX): Promise<CurlOutcome> {
  await mkdir(outDir, { recursive: true })
  const configFile = `${outDir}.curlrc`
  writeFileSync(configFile, urls.map((url) => `url = "${url}"\n`).join(''))
  const started = performance.now()
  const { code, stderr } = await new Promise<{ code: number | null, stderr: string }>((resolve, reject) => {
    // `times` prints the CPU time of the shell's children (curl) when it is done
    const child = spawn('/bin/sh', ['-c', '"$0" "$@"; s=$?; times >&2; exit $s', bin, ...curlArgs(configFile, outDir, parallelMax)],
      { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString() })
    child.once('error', reject)
    child.once('exit', (exitCode) => resolve({ code: exitCode, stderr: err }))
  })
  const ms = performance.now() - started
  if (code !== 0) throw new Error(`curl exited with ${code}: ${stderr.slice(0, 500)}`)
  const names = await readdir(outDir)
  let bytes = 0
  for (const name of names) bytes += (await stat(path.join(outDir, name))).size
  if (names.length !== urls.length) throw new Error(`curl wrote ${names.length} files for ${urls.length} URLs`)
  return { ms, cpuMs: childrenCpuMs(stderr), files: names.length, bytes }
}
