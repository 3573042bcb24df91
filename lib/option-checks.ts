/**
 * Checks of the numeric options a factory takes (`createX(options)`): a wrong one is a
 * TypeError at construction naming the component and the option, not a misbehaviour later.
 */

/** `value` when it is a positive safe integer; otherwise throws `<owner>: <name> must be …`. */
export function positiveInteger (owner: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`${owner}: ${name} must be a positive integer, got ${String(value)}`)
  }
  return value
}

/** `value` when it is a safe integer of 0 or more; otherwise throws `<owner>: <name> must be …`. */
export function nonNegativeInteger (owner: string, name: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`${owner}: ${name} must be a non-negative integer, got ${String(value)}`)
  }
  return value
}
