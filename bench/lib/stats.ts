/** Median and range of repeated measurements: what every figure in BENCHMARKS.md is made of. */
export interface Summary {
  runs: number
  median: number
  min: number
  max: number
}

export function summarize (values: readonly number[]): Summary {
  if (values.length === 0) throw new Error('no measurements to summarize')
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  const median = sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
  return { runs: sorted.length, median, min: sorted[0]!, max: sorted[sorted.length - 1]! }
}

/** A number with a sensible number of digits for a table. */
export function num (value: number, digits?: number): string {
  if (!Number.isFinite(value)) return String(value)
  const d = digits ?? (Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 10 ? 1 : 2)
  return value.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d })
}

/** "1,234 (1,100–1,300)": median, then min–max. */
export function fmt (s: Summary, digits?: number, unit = ''): string {
  return `${num(s.median, digits)}${unit} (${num(s.min, digits)}–${num(s.max, digits)}${unit})`
}

/** Least-squares line through (x, y): y ≈ intercept + slope·x, with r² to judge linearity. */
export function linearFit (points: ReadonlyArray<readonly [number, number]>): { slope: number, intercept: number, r2: number } {
  const n = points.length
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  let sxy = 0
  let sxx = 0
  let syy = 0
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my)
    sxx += (x - mx) ** 2
    syy += (y - my) ** 2
  }
  const slope = sxx === 0 ? 0 : sxy / sxx
  const r2 = syy === 0 || sxx === 0 ? 1 : (sxy * sxy) / (sxx * syy)
  return { slope, intercept: my - slope * mx, r2 }
}

export const MiB = 1024 * 1024
