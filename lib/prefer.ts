/**
 * The Prefer request header (RFC 7240): which preferences a request states.
 *
 *     Prefer     = 1#preference
 *     preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )
 *     parameter  = token [ BWS "=" BWS word ]
 *     word       = token / quoted-string
 *
 * Names are case-insensitive; the first of a repeated preference counts (§2); a preference
 * that does not follow the grammar is ignored, as one the server does not know would be
 * (a server may ignore any preference): a Prefer header is never a reason to refuse.
 *
 * Written here rather than taken from npm: the parser there (parse-prefer-header)
 * camel-cases names, so `respond async`, `respondAsync` and `respond-async` all read as one
 * preference, and it accepts spaces inside tokens; the grammar above is small. The scan is
 * linear in the header's length (no backtracking regular expression over the whole value).
 */

const TOKEN = /[!#$%&'*+\-.^_`|~0-9A-Za-z]+/y
// qdtext and quoted-pair: any byte but controls (HTAB allowed), `"` and `\` unless escaped
// eslint-disable-next-line no-control-regex -- excluding control characters is the point
const QUOTED = /"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*)"/y
const SPACES = /[ \t]*/y

/** The match of a sticky pattern at `index`, if any. */
function matchAt (pattern: RegExp, text: string, index: number): RegExpExecArray | null {
  pattern.lastIndex = index
  return pattern.exec(text)
}

function skipSpaces (text: string, index: number): number {
  SPACES.lastIndex = index
  SPACES.exec(text)
  return SPACES.lastIndex
}

/** A token or quoted-string at `index`: its value (unescaped) and where it ends. */
function readWord (text: string, index: number): { value: string, end: number } | undefined {
  const token = matchAt(TOKEN, text, index)
  if (token !== null) return { value: token[0], end: TOKEN.lastIndex }
  const quoted = matchAt(QUOTED, text, index)
  if (quoted !== null) return { value: quoted[1]!.replace(/\\(.)/g, '$1'), end: QUOTED.lastIndex }
  return undefined
}

/** `[ BWS "=" BWS word ]` at `index`: where it ends, its value if present, or false when malformed. */
function readValue (text: string, index: number): { value: string | undefined, end: number } | false {
  const at = skipSpaces(text, index)
  if (text[at] !== '=') return { value: undefined, end: index }
  const word = readWord(text, skipSpaces(text, at + 1))
  return word === undefined ? false : word
}

/** One list element: the preference's lowercased name and value, or undefined when malformed. */
function readPreference (element: string): { name: string, value: string | undefined } | undefined {
  const token = matchAt(TOKEN, element, skipSpaces(element, 0))
  if (token === null) return undefined
  const head = readValue(element, TOKEN.lastIndex)
  if (head === false) return undefined
  let at = head.end
  // parameters: read to check the grammar; no preference this service knows takes one
  for (;;) {
    at = skipSpaces(element, at)
    if (at === element.length) return { name: token[0].toLowerCase(), value: head.value }
    if (element[at] !== ';') return undefined
    at = skipSpaces(element, at + 1)
    if (matchAt(TOKEN, element, at) === null) continue
    const parameter = readValue(element, TOKEN.lastIndex)
    if (parameter === false) return undefined
    at = parameter.end
  }
}

/** Where the list element starting at `start` ends: the next comma outside a quoted string. */
function elementEnd (text: string, start: number): number {
  let quoted = false
  for (let i = start; i < text.length; i++) {
    const c = text[i]
    if (quoted && c === '\\') i++
    else if (c === '"') quoted = !quoted
    else if (c === ',' && !quoted) return i
  }
  return text.length
}

/**
 * The preferences of a Prefer header (its fields joined, as Node joins repeated ones), by
 * lowercased name, each with its value (undefined when it has none).
 */
export function parsePrefer (header: string | readonly string[] | undefined): Map<string, string | undefined> {
  const text = typeof header === 'string' ? header : (header ?? []).join(',')
  const preferences = new Map<string, string | undefined>()
  for (let start = 0; start <= text.length;) {
    const end = elementEnd(text, start)
    const preference = readPreference(text.slice(start, end))
    if (preference !== undefined && !preferences.has(preference.name)) preferences.set(preference.name, preference.value)
    start = end + 1
  }
  return preferences
}

/** Whether a Prefer header asks for an asynchronous answer (`respond-async`, §4.1). */
export function prefersRespondAsync (header: string | readonly string[] | undefined): boolean {
  return parsePrefer(header).has('respond-async')
}
