import { readFileSync } from 'node:fs'

/**
 * The package's own name and version, read from its package.json: one folder up from this
 * module in the sources (lib/), two from the built copy (dist/lib/). Not imported as JSON,
 * which would make tsc copy package.json into dist/ and change how Node reads dist's modules.
 */
export function packageInfo (): { name: string, version: string } {
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      const { name, version } = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { name?: unknown, version?: unknown }
      if (name === 'image-dump' && typeof version === 'string') return { name, version }
    } catch {
      // not there: the other candidate
    }
  }
  return { name: 'image-dump', version: '0.0.0' }
}
