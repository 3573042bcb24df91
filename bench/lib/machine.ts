import { spawnSync } from 'node:child_process'
import os from 'node:os'
import { ROOT } from './service.js'

export interface Machine {
  date: string
  cpu: string
  cores: number
  memory: string
  os: string
  node: string
  commit: string
}

function git (...args: string[]): string {
  const out = spawnSync('git', args, { cwd: ROOT, encoding: 'utf8' })
  return out.status === 0 ? out.stdout.trim() : ''
}

export function describeMachine (): Machine {
  const cpus = os.cpus()
  const commit = git('rev-parse', '--short', 'HEAD')
  const dirty = git('status', '--porcelain', '--untracked-files=no') !== ''
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    os: `${os.type()} ${os.release()} (${os.arch()})`,
    node: process.version,
    commit: commit === '' ? 'unknown' : `${commit}${dirty ? ' with uncommitted changes' : ''}`
  }
}
