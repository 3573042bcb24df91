/**
 * Image type detection from magic bytes. The origin's Content-Type is never trusted:
 * a type is decided by what the bytes are. Only raster formats a browser or image
 * library renders as a picture count; SVG (script-capable XML), HTML, text, archives
 * and anything unrecognised are not images here.
 */

export interface SniffedType {
  contentType: string
  ext: string
}

/**
 * How many leading bytes `sniffImageType` wants to see. Every signature below fits in
 * it (the longest look-ahead is AVIF's ftyp compatible-brand list); a shorter buffer is
 * fine when the whole body is shorter.
 */
export const SNIFF_BYTES = 32

/** The extensions sniffImageType stores images under, and their content types. */
const CONTENT_TYPES: Readonly<Record<string, string>> = Object.freeze({
  png: 'image/png',
  jpg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  avif: 'image/avif',
  bmp: 'image/bmp',
  tiff: 'image/tiff'
})

/** Every extension an image may be stored under. */
export const IMAGE_EXTENSIONS: readonly string[] = Object.freeze(Object.keys(CONTENT_TYPES))

/**
 * The content type of a stored image from the extension sniffImageType gave it (`"png"`,
 * `"jpg"`, …), or undefined for any other extension (`.part` files included).
 */
export function contentTypeOfExtension (ext: string): string | undefined {
  return Object.hasOwn(CONTENT_TYPES, ext) ? CONTENT_TYPES[ext] : undefined
}

function typeOf (ext: string): SniffedType {
  return { contentType: CONTENT_TYPES[ext]!, ext }
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])

// BITMAPCOREHEADER, OS/2 v2 (16 and 64), BITMAPINFOHEADER, v2, v3, v4, v5 sizes: checking
// the DIB header size keeps any text that happens to start with "BM" from passing as BMP.
const BMP_DIB_HEADER_SIZES = new Set([12, 16, 40, 52, 56, 64, 108, 124])

const AVIF_BRANDS = new Set(['avif', 'avis'])

function ascii (head: Buffer, start: number, end: number): string {
  return head.toString('latin1', start, end)
}

function isAvif (head: Buffer): boolean {
  // ISO-BMFF: the file starts with an `ftyp` box: size(4) 'ftyp' major(4) minor(4) compatible(4)*
  if (head.length < 12 || ascii(head, 4, 8) !== 'ftyp') return false
  if (AVIF_BRANDS.has(ascii(head, 8, 12))) return true
  // Some encoders put a generic major brand (mif1, msf1) and list avif as compatible.
  const boxEnd = Math.min(head.readUInt32BE(0), head.length)
  for (let offset = 16; offset + 4 <= boxEnd; offset += 4) {
    if (AVIF_BRANDS.has(ascii(head, offset, offset + 4))) return true
  }
  return false
}

/**
 * The image type of a body from its first bytes (pass at least SNIFF_BYTES when the
 * body has them), or null when it is not a supported raster image.
 */
export function sniffImageType (head: Buffer): SniffedType | null {
  if (head.length >= 8 && head.subarray(0, 8).equals(PNG_SIGNATURE)) {
    return typeOf('png')
  }
  if (head.length >= 3 && head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff) {
    return typeOf('jpg')
  }
  if (head.length >= 6 && (ascii(head, 0, 6) === 'GIF87a' || ascii(head, 0, 6) === 'GIF89a')) {
    return typeOf('gif')
  }
  if (head.length >= 12 && ascii(head, 0, 4) === 'RIFF' && ascii(head, 8, 12) === 'WEBP') {
    return typeOf('webp')
  }
  if (isAvif(head)) {
    return typeOf('avif')
  }
  if (head.length >= 18 && ascii(head, 0, 2) === 'BM' && BMP_DIB_HEADER_SIZES.has(head.readUInt32LE(14))) {
    return typeOf('bmp')
  }
  if (head.length >= 4 && (ascii(head, 0, 4) === 'II*\0' || ascii(head, 0, 4) === 'MM\0*')) {
    return typeOf('tiff')
  }
  return null
}
