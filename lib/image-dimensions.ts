/**
 * Width and height of an image from its header, read while the body streams by, without
 * decoding a pixel. The header itself is parsed by `image-size`; this module decides which
 * bytes it is shown and which of its answers are believed.
 *
 * - Dimensions are as displayed: a JPEG whose EXIF orientation turns it a quarter (5–8)
 *   has its width and height swapped, as every current browser shows it (CSS
 *   `image-orientation: from-image` is the default) and as `naturalWidth` reports it.
 *   Other formats are reported as stored (AVIF `irot` and TIFF or WebP orientation tags
 *   are not applied).
 * - image-size reads through a DataView over the input's whole ArrayBuffer, so a slice of
 *   a pooled Buffer would let it read past the body into whatever follows it. It is only
 *   ever given an exact copy of the bytes, where reading past the end throws.
 * - The first HEADER_LIMIT_BYTES of a body are looked at (the bound image-size itself uses
 *   when it reads a file): a JPEG whose frame header comes after more metadata than that
 *   has no dimensions. A TIFF's directory may be anywhere (libtiff writes it after the
 *   pixels): its position is read from the file header and the bytes there are caught as
 *   they pass, then shown to image-size behind a header that points at them.
 * - An answer is believed only when both numbers are whole, positive and at most 2^31 − 1
 *   (PNG's own limit), and only for the type the bytes were sniffed as. Anything else is
 *   no dimensions: the image is stored without them.
 */
import { imageSize } from 'image-size'

export interface Dimensions {
  width: number
  height: number
}

/** How many leading bytes of a body are searched for its header. */
export const HEADER_LIMIT_BYTES = 512 * 1024

const MAX_SIDE = 2 ** 31 - 1
// image-size reads a lossless WebP's size byte by byte, where a missing byte counts as
// zero: fewer than 30 bytes (the VP8/VP8L/VP8X headers all fit) would give a wrong size.
const MIN_BYTES: Readonly<Record<string, number>> = { webp: 30 }
// the types image-size may name for what lib/sniff.ts stored under each extension
const ACCEPTED_TYPES: Readonly<Record<string, readonly string[]>> = {
  png: ['png'],
  jpg: ['jpg'],
  gif: ['gif'],
  webp: ['webp'],
  avif: ['avif', 'heif'],
  bmp: ['bmp'],
  tiff: ['tiff']
}
// a TIFF directory's first entries (width and height are tags 256 and 257, and entries
// are sorted by tag) fit in far fewer bytes than this
const TIFF_DIRECTORY_BYTES = 4096
const QUARTER_TURNS = new Set([5, 6, 7, 8])

const exactCopy = (chunks: readonly Uint8Array[], length: number): Uint8Array => {
  const copy = new Uint8Array(length)
  let at = 0
  for (const chunk of chunks) {
    copy.set(chunk.subarray(0, length - at), at)
    at += Math.min(chunk.length, length - at)
    if (at === length) break
  }
  return copy
}

const isSide = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= MAX_SIDE

/** The dimensions in the header `bytes` of an image sniffed as `ext`, or undefined. */
export function parseDimensions (ext: string, bytes: Uint8Array): Dimensions | undefined {
  const accepted = ACCEPTED_TYPES[ext]
  if (accepted === undefined || bytes.length < (MIN_BYTES[ext] ?? 0)) return undefined
  const input = bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length ? bytes : exactCopy([bytes], bytes.length)
  let size
  try {
    size = imageSize(input)
  } catch {
    return undefined
  }
  if (!accepted.includes(size.type ?? '')) return undefined
  let { width, height } = size
  // OS/2 1.x bitmaps (a 12-byte DIB header) keep 16-bit sizes where image-size reads 32 bits
  if (ext === 'bmp' && input.length >= 22 && input[14] === 12 && input[15] === 0 && input[16] === 0 && input[17] === 0) {
    width = input[18]! | (input[19]! << 8)
    height = input[20]! | (input[21]! << 8)
  }
  if (!isSide(width) || !isSide(height)) return undefined
  return size.orientation !== undefined && QUARTER_TURNS.has(size.orientation) ? { width: height, height: width } : { width, height }
}

/** What reads one body's header: chunks in order, then the end of the body. */
interface HeaderSource {
  /** true once the dimensions were found or will not be */
  readonly done: boolean
  push (chunk: Buffer): void
  finish (): Dimensions | undefined
}

// the first look at a body: most headers are in its first few hundred bytes
const FIRST_LOOK_BYTES = 4096

/** The header at the start of the body, in its first HEADER_LIMIT_BYTES. */
class LeadingHeader implements HeaderSource {
  #chunks: Buffer[] = []
  #length = 0
  // how many bytes the next look takes: doubled after each look that found nothing, so a
  // header in the first bytes (the usual case) costs one parse of a small copy, a hopeless
  // body a few, and the bytes copied for all looks together stay under twice the limit
  #look = FIRST_LOOK_BYTES
  #found: Dimensions | undefined
  #done = false

  constructor (readonly ext: string) {}

  get done (): boolean { return this.#done }

  push (chunk: Buffer): void {
    if (this.#done) return
    this.#chunks.push(chunk)
    this.#length += chunk.length
    while (!this.#done && this.#length >= this.#look) this.#try(this.#look)
  }

  finish (): Dimensions | undefined {
    if (!this.#done) this.#try(Math.min(this.#length, HEADER_LIMIT_BYTES), true)
    return this.#found
  }

  #try (length: number, last = false): void {
    this.#found = parseDimensions(this.ext, exactCopy(this.#chunks, length))
    if (this.#found !== undefined || last || length >= HEADER_LIMIT_BYTES) {
      this.#done = true
      this.#chunks = []
    } else {
      this.#look = Math.min(2 * length, HEADER_LIMIT_BYTES)
    }
  }
}

/**
 * A TIFF's first directory, wherever it is: the 8-byte file header says where (BigTIFF
 * is not stored: lib/sniff.ts does not take it for an image); the TIFF_DIRECTORY_BYTES from there are caught as they pass and shown to
 * image-size behind a copy of the header that points right after itself.
 */
class TiffDirectory implements HeaderSource {
  // until the header is read: every chunk so far (the directory may be in them)
  #early: Buffer[] = []
  #earlyLength = 0
  #header: Buffer | undefined
  #directoryAt = 0
  #received = 0
  #window: Buffer[] = []
  #windowLength = 0
  #found: Dimensions | undefined
  #done = false

  get done (): boolean { return this.#done }

  push (chunk: Buffer): void {
    if (this.#done) return
    if (this.#header !== undefined) return this.#catch(chunk)
    this.#early.push(chunk)
    this.#earlyLength += chunk.length
    if (this.#earlyLength < 8) return
    const start = Buffer.from(exactCopy(this.#early, 8))
    const little = start.toString('latin1', 0, 2) === 'II'
    const offset = little ? start.readUInt32LE(4) : start.readUInt32BE(4)
    const early = this.#early
    this.#early = []
    if (offset < 8) return this.#end()
    // the copy's directory starts right after its header
    const header = Buffer.from(start.subarray(0, 8))
    if (little) header.writeUInt32LE(8, 4)
    else header.writeUInt32BE(8, 4)
    this.#header = header
    this.#directoryAt = offset
    for (const seen of early) this.#catch(seen)
  }

  finish (): Dimensions | undefined {
    if (!this.#done) this.#try()
    return this.#found
  }

  /** Keeps what of `chunk` falls in the directory's window. */
  #catch (chunk: Buffer): void {
    const start = this.#received
    this.#received += chunk.length
    const from = this.#directoryAt
    const to = from + TIFF_DIRECTORY_BYTES
    if (this.#received <= from || start >= to) return
    const piece = chunk.subarray(Math.max(0, from - start), Math.min(chunk.length, to - start))
    this.#window.push(piece)
    this.#windowLength += piece.length
    if (this.#windowLength >= TIFF_DIRECTORY_BYTES) this.#try()
  }

  #try (): void {
    if (this.#header !== undefined) {
      this.#found = parseDimensions('tiff', exactCopy([this.#header, ...this.#window], this.#header.length + this.#windowLength))
    }
    this.#end()
  }

  #end (): void {
    this.#done = true
    this.#early = []
    this.#window = []
  }
}

/**
 * Reads the dimensions of one body sniffed as `ext` from its chunks: `push` each chunk,
 * in order, while `done` is false, then `finish()` once the body has ended.
 */
export function createDimensionReader (ext: string): HeaderSource {
  return ext === 'tiff' ? new TiffDirectory() : new LeadingHeader(ext)
}

export type DimensionReader = HeaderSource
