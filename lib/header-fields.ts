/**
 * Header fields as they arrived. Node joins a repeated field into one value ("a, b"), which
 * hides that it was sent twice; for a field that must appear once, count the raw fields.
 */

/** How many times a header field appears in a request (rawHeaders: name, value, name, value, …). */
export function fieldCount (rawHeaders: readonly string[], name: string): number {
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) count++
  return count
}
