/** Plain objects as documents parsed from a client hold them. */
export type Dict = Record<string, unknown>

export function isDict (value: unknown): value is Dict {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/**
 * Sets an own, enumerable field. defineProperty, not assignment: an own "__proto__" key
 * (JSON.parse makes them) must stay a plain field that validation reports, never become
 * the object's prototype.
 */
export function put (target: Dict, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}
