/**
 * Reads a V8 .cpuprofile (what `node --cpu-prof` writes) and lists where the time went:
 * self time per function and per area (a package, a Node internal module, our own files,
 * the garbage collector). Run on its own: `node --import tsx bench/lib/cpuprofile.ts <file>`.
 */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

interface Profile {
  nodes: ProfileNode[]
  startTime: number
  endTime: number
  samples: number[]
  timeDeltas: number[]
}

export interface ProfileSummary {
  /** µs sampled, idle excluded */
  busyMicros: number
  idleMicros: number
  functions: Array<{ name: string, where: string, micros: number }>
  areas: Array<{ area: string, micros: number }>
}

function areaOf (url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native)'
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg !== null) return pkg[1]!
  if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?([^/]+).*$/, 'node:$2')
  const own = /\/(dist|bench|test)\/(.*)$/.exec(url)
  return own === null ? url : `${own[1]}/${own[2]}`
}

export function summarizeProfile (file: string, top = 25): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const self = new Map<number, number>()
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)))
  const functions = new Map<string, { name: string, where: string, micros: number }>()
  const areas = new Map<string, number>()
  let idle = 0
  let busy = 0
  for (const [id, micros] of self) {
    const { functionName, url, lineNumber } = byId.get(id)!.callFrame
    if (functionName === '(idle)') {
      idle += micros
      continue
    }
    busy += micros
    const name = functionName === '' ? '(anonymous)' : functionName
    const where = url === '' ? '' : `${url.replace(/^file:\/\/.*?\/(node_modules|dist)\//, '$1/')}:${lineNumber + 1}`
    const key = `${name} ${where}`
    const entry = functions.get(key) ?? { name, where, micros: 0 }
    entry.micros += micros
    functions.set(key, entry)
    const area = areaOf(url, name)
    areas.set(area, (areas.get(area) ?? 0) + micros)
  }
  return {
    busyMicros: busy,
    idleMicros: idle,
    functions: [...functions.values()].sort((a, b) => b.micros - a.micros).slice(0, top),
    areas: [...areas].map(([area, micros]) => ({ area, micros })).sort((a, b) => b.micros - a.micros).slice(0, top)
  }
}

export function formatProfile (summary: ProfileSummary): string {
  const pct = (micros: number): string => `${(100 * micros / summary.busyMicros).toFixed(1)} %`
  const ms = (micros: number): string => `${(micros / 1000).toFixed(0)} ms`
  return [
    `busy ${ms(summary.busyMicros)}, idle ${ms(summary.idleMicros)} (${(100 * summary.busyMicros / (summary.busyMicros + summary.idleMicros)).toFixed(0)} % of the main thread busy)`,
    '',
    '| self time | share | area |',
    '|---:|---:|---|',
    ...summary.areas.map((a) => `| ${ms(a.micros)} | ${pct(a.micros)} | ${a.area} |`),
    '',
    '| self time | share | function | where |',
    '|---:|---:|---|---|',
    ...summary.functions.map((f) => `| ${ms(f.micros)} | ${pct(f.micros)} | \`${f.name}\` | ${f.where} |`)
  ].join('\n')
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write('usage: node --import tsx bench/lib/cpuprofile.ts <file.cpuprofile> [top]\n')
    process.exit(2)
  }
  process.stdout.write(formatProfile(summarizeProfile(file, Number(process.argv[3] ?? 25))) + '\n')
}
