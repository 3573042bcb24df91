/**
 * XML bodies: from text to the parser's plain object, refusing everything XML can do
 * beyond elements and text (DOCTYPEs, declarations, undefined entities, deep nesting).
 */
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import type { EntityDecoderOptions, MatcherView } from 'fast-xml-parser'
import { BadRequestError, UnsupportedMediaTypeError } from '../../lib/errors.js'
import { clip, quote } from '../../lib/excerpt.js'
import { assertUtf8Charset, isUtf8Name } from './media-types.js'

export const DEFAULT_MAX_DEPTH = 32

const PREDEFINED_ENTITIES: Readonly<Record<string, string>> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }
const ENTITY_REFERENCE = /&(#x[0-9a-fA-F]+|#[0-9]+|[^\s&;]+);/g

function isXmlChar (code: number): boolean {
  return code === 0x9 || code === 0xA || code === 0xD ||
    (code >= 0x20 && code <= 0xD7FF) || (code >= 0xE000 && code <= 0xFFFD) || (code >= 0x10000 && code <= 0x10FFFF)
}

/**
 * The parser's own decoder leaves numeric references alone unless HTML entities are
 * switched on (which would add &nbsp; and friends). This one knows exactly XML's five
 * entities and character references, and refuses anything else: an unknown entity is a
 * well-formedness error, and nothing is ever taken from a DTD.
 */
function xmlEntityDecoder (): EntityDecoderOptions {
  return {
    setExternalEntities: () => {},
    addInputEntities: () => { throw new BadRequestError('DOCTYPE is not allowed') },
    reset: () => {},
    setXmlVersion: () => {},
    decode: (text: string) => text.includes('&')
      ? text.replace(ENTITY_REFERENCE, (whole, ref: string) => {
        if (ref[0] === '#') {
          const code = ref[1] === 'x' ? Number.parseInt(ref.slice(2), 16) : Number.parseInt(ref.slice(1), 10)
          if (!isXmlChar(code)) throw new BadRequestError(`malformed XML: invalid character reference ${quote(whole)}`)
          return String.fromCodePoint(code)
        }
        const value = PREDEFINED_ENTITIES[ref]
        if (value === undefined) {
          throw new BadRequestError(`malformed XML: undefined entity ${quote(whole)} (only &amp; &lt; &gt; &quot; &apos; and numeric references are allowed)`)
        }
        return value
      })
      : text
  }
}

function isMatcher (jPath: string | MatcherView): jPath is MatcherView {
  return typeof jPath !== 'string'
}

function pathIs (jPath: string | MatcherView, ...tags: string[]): boolean {
  if (!isMatcher(jPath) || jPath.getDepth() !== tags.length) return false
  const path = jPath.toArray()
  return tags.every((tag, i) => path[i] === tag)
}

/**
 * The first `<!…` in an XML text that is neither a comment nor a CDATA section — a DOCTYPE,
 * an `<!ENTITY …>` or anything else — as the word after `<!`, or undefined when there is
 * none. Comments and CDATA sections are skipped, so text that only mentions "<!DOCTYPE" is
 * not one; an unterminated one is left to the validator. The validator lets `<!ENTITY x>`
 * and `<!x>` through, and the parser reads them as unclosed elements that swallow what
 * follows, so they are refused here by name rather than reported as a missing field.
 */
export function firstDeclaration (text: string): string | undefined {
  for (let at = text.indexOf('<!'); at !== -1; at = text.indexOf('<!', at)) {
    const close = text.startsWith('<!--', at) ? '-->' : text.startsWith('<![CDATA[', at) ? ']]>' : undefined
    if (close === undefined) return /^<!([^\s>[]*)/.exec(text.slice(at, at + 64))![1]
    const end = text.indexOf(close, at + (close === '-->' ? 4 : 9))
    if (end === -1) return undefined
    at = end + close.length
  }
  return undefined
}

// XML 1.0 Char: a raw control character is a well-formedness error like its &#1; reference
const NOT_AN_XML_CHAR = /[^\t\n\r\x20-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/u
const DECLARED_ENCODING = /^\s*<\?xml\s[^>]*?encoding\s*=\s*["']([^"']*)["']/
// the validator's and parser's messages quote names from the document in single quotes
const QUOTED_NAME = /'([^']*)'/g
const NAME_CHARS = 40

/** A parser's message, with the names it quotes from the document cut short. */
function parserMessage (message: string): string {
  return clip(message.replace(QUOTED_NAME, (whole, name: string) => name.length <= NAME_CHARS ? whole : `'${name.slice(0, NAME_CHARS)}'…`))
}

/**
 * Builds the function that turns an XML text into the parser's plain object (the literal
 * mapping: `{ items: { item: [{ …, images: { url: […] } }] } }`). Throws a 400 for a
 * DOCTYPE, malformed XML, an undefined entity, a forbidden element name or nesting past
 * maxDepth; a 415 for an encoding other than UTF-8. `charset` is the Content-Type's charset
 * parameter: when given it decides (RFC 7303), otherwise the XML declaration does.
 */
export function createXmlReader (options: { maxDepth?: number } = {}): (text: string, charset?: string) => unknown {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH
  const depthError = (): Error => new BadRequestError(`malformed XML: elements nested deeper than ${maxDepth} levels`)
  const parser = new XMLParser({
    ignoreAttributes: true,
    parseTagValue: false,
    parseAttributeValue: false,
    trimValues: true,
    ignoreDeclaration: true,
    ignorePiTags: true,
    processEntities: true,
    htmlEntities: false,
    entityDecoder: xmlEntityDecoder(),
    // the parser's own limit is a backstop: updateTag below counts exactly, self-closing tags too
    maxNestedTags: maxDepth + 1,
    jPath: false,
    isArray: (_tag, jPath) => pathIs(jPath, 'items', 'item') || pathIs(jPath, 'items', 'item', 'images', 'url'),
    updateTag: (tag, jPath) => {
      if (isMatcher(jPath) && jPath.getDepth() > maxDepth) throw depthError()
      return tag
    }
  })

  return function readXml (text: string, charset?: string): unknown {
    if (text.trim() === '') throw new BadRequestError('request body is empty')
    const declaration = firstDeclaration(text)
    if (declaration?.toUpperCase() === 'DOCTYPE') throw new BadRequestError('DOCTYPE is not allowed')
    if (declaration !== undefined) {
      throw new BadRequestError(`malformed XML: ${quote(`<!${declaration}`)} is not allowed (no DOCTYPE or declarations; only comments and CDATA sections start with <!)`)
    }
    if (charset === undefined) {
      const declared = DECLARED_ENCODING.exec(text)?.[1]
      if (declared !== undefined && !isUtf8Name(declared)) {
        throw new UnsupportedMediaTypeError(`unsupported XML encoding ${quote(declared)}: send the body in UTF-8`)
      }
    } else {
      assertUtf8Charset(charset)
    }
    const bad = NOT_AN_XML_CHAR.exec(text)
    if (bad !== null) {
      const before = text.slice(0, bad.index)
      const line = before.split('\n').length
      const column = bad.index - before.lastIndexOf('\n')
      const code = bad[0].codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')
      throw new BadRequestError(`malformed XML at line ${line}, column ${column}: character U+${code} is not allowed in XML`)
    }
    // the parser itself is lenient (it closes what is left open); the validator is not
    const valid = XMLValidator.validate(text)
    if (valid !== true) {
      const { msg, line, col } = valid.err
      throw new BadRequestError(`malformed XML at line ${line}${col === undefined ? '' : `, column ${col}`}: ${parserMessage(msg)}`)
    }
    try {
      return parser.parse(text)
    } catch (err) {
      if (err instanceof BadRequestError) throw err
      const message = err instanceof Error ? err.message : String(err)
      if (message.startsWith('[SECURITY]')) {
        const name = /"([^"]*)"/.exec(message)?.[1] ?? ''
        throw new BadRequestError(`malformed XML: element name ${quote(name)} is not allowed`)
      }
      if (message.includes('Maximum nested tags')) throw depthError()
      throw new BadRequestError(`malformed XML: ${parserMessage(message)}`)
    }
  }
}
