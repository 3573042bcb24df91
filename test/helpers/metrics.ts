import type { FastifyInstance } from 'fastify'

/** One scrape: every sample by its series, `name{label="value",…}` with labels sorted by name. */
export type Scrape = Map<string, number>

/**
 * The samples of a Prometheus text exposition. Enough of the format for what prom-client
 * writes: `# HELP`/`# TYPE` lines, and `name{labels} value` with quoted, escaped label values.
 */
export function parseMetrics (text: string): Scrape {
  const samples: Scrape = new Map()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null) throw new Error(`not a sample line: ${line}`)
    const [, name, labels = '', value] = match
    const pairs = [...labels.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map(([, key, v]) => `${key}="${v}"`).sort()
    samples.set(pairs.length === 0 ? name! : `${name}{${pairs.join(',')}}`, Number(value))
  }
  return samples
}

/** A series' key as parseMetrics writes it. */
export function series (name: string, labels: Record<string, string> = {}): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}="${value}"`).sort()
  return pairs.length === 0 ? name : `${name}{${pairs.join(',')}}`
}

export async function scrape (app: FastifyInstance, headers: Record<string, string> = {}, url = '/metrics'): Promise<Scrape> {
  const response = await app.inject({ method: 'GET', url, headers })
  if (response.statusCode !== 200) throw new Error(`GET ${url}: ${response.statusCode} ${response.body}`)
  return parseMetrics(response.body)
}

/** How much each series moved between two scrapes (absent counts as 0); only the series that moved. */
export function delta (before: Scrape, after: Scrape, prefix: string): Record<string, number> {
  const moved: Record<string, number> = {}
  for (const [key, value] of after) {
    if (!key.startsWith(prefix)) continue
    const change = value - (before.get(key) ?? 0)
    if (change !== 0) moved[key] = change
  }
  return moved
}
