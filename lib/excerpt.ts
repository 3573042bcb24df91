/**
 * How an answer or a log line may quote what a client sent. A message built from input must
 * not grow with the input: a 16 MiB body must not become a 16 MiB answer or log line, and a
 * control character in it must not break a log line apart.
 */

/** The most characters of input a message quotes. */
export const EXCERPT_CHARS = 100

/** The longest any message built from input gets (a backstop; each quote is shorter). */
export const MESSAGE_CHARS = 500

// C0 and C1 controls, DEL and the two line separators JavaScript treats as line ends
// (matching control characters is the point here)
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g

/** `\n`, `\t`… as JSON writes them; the others as `\u` escapes. */
function escapeControl (c: string): string {
  const json = JSON.stringify(c).slice(1, -1)
  return json !== c ? json : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
}

/** Where to cut `text` to keep at most `max` characters without splitting a surrogate pair. */
function cutAt (text: string, max: number): number {
  if (text.length <= max) return text.length
  const last = text.charCodeAt(max - 1)
  return last >= 0xd800 && last <= 0xdbff ? max - 1 : max
}

/**
 * A piece of input as a message quotes it: in double quotes with JSON's escaping, at most
 * `max` characters of it, and `…` after the closing quote when there was more. What is
 * between the quotes is always exactly a prefix of the input.
 */
export function quote (input: string, max: number = EXCERPT_CHARS): string {
  const end = cutAt(input, max)
  return end === input.length ? JSON.stringify(input) : `${JSON.stringify(input.slice(0, end))}…`
}

/**
 * Text that may carry pieces of the input (a parser's own message, a URL): control
 * characters escaped as JSON escapes them, cut at `max` characters with `…`.
 */
export function clip (text: string, max: number = MESSAGE_CHARS): string {
  const end = cutAt(text, max)
  const escaped = text.slice(0, end).replace(CONTROL, escapeControl)
  return end === text.length ? escaped : `${escaped}…`
}
