/**
 * Real, decodable image files for tests, built in code so every test can compute the exact
 * bytes it expects an origin to serve. Shared by the test origin (test/helpers/origin.ts),
 * the fetcher tests and the sniffing tests.
 */
import { crc32, deflateSync } from 'node:zlib'

function pngChunk (type: string, data: Buffer): Buffer {
  const header = Buffer.alloc(8)
  header.writeUInt32BE(data.length, 0)
  header.write(type, 4, 'latin1')
  const crc = Buffer.alloc(4)
  crc.writeUInt32BE(crc32(Buffer.concat([header.subarray(4), data])), 0)
  return Buffer.concat([header, data, crc])
}

export interface PngOptions {
  /** pad the file (with a tEXt chunk, so it stays a valid PNG) to exactly this many bytes */
  bytes?: number
}

/**
 * A valid 8x8 RGB PNG whose pixels depend on `n`: different `n` (0..65535) give different
 * bytes, the same `n` always the same bytes.
 */
export function makePng (n: number, options: PngOptions = {}): Buffer {
  const size = 8
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(size, 0)
  ihdr.writeUInt32BE(size, 4)
  ihdr[8] = 8 // bit depth
  ihdr[9] = 2 // colour type: RGB
  // compression, filter and interlace methods stay 0
  const raw = Buffer.alloc(size * (1 + size * 3))
  for (let y = 0; y < size; y++) {
    const row = y * (1 + size * 3)
    raw[row] = 0 // filter: none
    for (let x = 0; x < size; x++) {
      const p = row + 1 + x * 3
      raw[p] = (n * 37 + x * 31) & 0xff
      raw[p + 1] = (n * 11 + y * 29) & 0xff
      raw[p + 2] = ((n >> 8) ^ (x * y)) & 0xff
    }
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
  const head = Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', deflateSync(raw))])
  const iend = pngChunk('IEND', Buffer.alloc(0))
  const keyword = Buffer.from('Comment\0', 'latin1')
  const overhead = head.length + iend.length + 12 + keyword.length
  if (options.bytes === undefined || options.bytes < overhead) return Buffer.concat([head, iend])
  const text = Buffer.concat([keyword, Buffer.alloc(options.bytes - overhead, 'x')])
  return Buffer.concat([head, pngChunk('tEXt', text), iend])
}

/**
 * A valid baseline JPEG: one 8x8 mid-grey block (all DCT coefficients zero, coded with
 * one-symbol Huffman tables), with a comment naming `n` so different `n` differ.
 */
export function makeJpeg (n: number): Buffer {
  const comment = Buffer.from(`image ${n}`, 'latin1')
  const com = Buffer.alloc(4)
  com.writeUInt16BE(0xfffe, 0)
  com.writeUInt16BE(comment.length + 2, 2)
  return Buffer.concat([
    Buffer.from([0xff, 0xd8]), // SOI
    Buffer.from([0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]), // APP0 JFIF
    com, comment, // COM
    Buffer.from([0xff, 0xdb, 0x00, 0x43, 0x00]), Buffer.alloc(64, 1), // DQT: table 0, all ones
    Buffer.from([0xff, 0xc0, 0x00, 0x0b, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00]), // SOF0: 8x8, 1 component
    Buffer.from([0xff, 0xc4, 0x00, 0x14, 0x00, 1, ...new Array(15).fill(0), 0x00]), // DHT DC0: '0' -> category 0
    Buffer.from([0xff, 0xc4, 0x00, 0x14, 0x10, 1, ...new Array(15).fill(0), 0x00]), // DHT AC0: '0' -> EOB
    Buffer.from([0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3f, 0x00]), // SOS
    Buffer.from([0x3f]), // DC '0', EOB '0', padded with ones
    Buffer.from([0xff, 0xd9]) // EOI
  ])
}

/** The classic 1x1 transparent GIF89a. */
export const GIF = Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64')

/** 1x1 lossy WebP (Google's WebP feature-detection sample). */
export const WEBP = Buffer.from('UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA', 'base64')

/** 1x1 AVIF (the lossy sample three.js uses to detect AVIF support). */
export const AVIF = Buffer.from(
  'AAAAIGZ0eXBhdmlmAAAAAGF2aWZtaWYxbWlhZk1BMUIAAADybWV0YQAAAAAAAAAoaGRscgAAAAAAAAAAcGljdAAAAAAAAAAAAAAAAGxp' +
  'YmF2aWYAAAAADnBpdG0AAAAAAAEAAAAeaWxvYwAAAABEAAABAAEAAAABAAABGgAAABcAAAAoaWluZgAAAAAAAQAAABppbmZlAgAAAAAB' +
  'AABhdjAxQ29sb3IAAAAAamlwcnAAAABLaXBjbwAAABRpc3BlAAAAAAAAAAEAAAABAAAAEHBpeGkAAAAAAwgICAAAAAxhdjFDgQAMAAAA' +
  'ABNjb2xybmNseAACAAIABoAAAAAXaXBtYQAAAAAAAAABAAEEAQKDBAAAAB9tZGF0EgAKCBgABogQEDQgMgkQAAAAB8dSLfI=',
  'base64'
)

/** 1x1 24-bit BMP (BITMAPINFOHEADER), one red pixel. */
export const BMP = ((): Buffer => {
  const b = Buffer.alloc(58)
  b.write('BM', 0, 'latin1')
  b.writeUInt32LE(58, 2) // file size
  b.writeUInt32LE(54, 10) // pixel data offset
  b.writeUInt32LE(40, 14) // DIB header size
  b.writeInt32LE(1, 18) // width
  b.writeInt32LE(1, 22) // height
  b.writeUInt16LE(1, 26) // planes
  b.writeUInt16LE(24, 28) // bits per pixel
  b.writeUInt32LE(4, 34) // image size (one row padded to 4 bytes)
  b.writeInt32LE(2835, 38) // 72 dpi
  b.writeInt32LE(2835, 42)
  b[56] = 0xff // B G R: red
  return b
})()

/** 1x1 8-bit greyscale baseline TIFF, little-endian. */
export const TIFF = ((): Buffer => {
  const entries: Array<[tag: number, type: number, value: number]> = [
    [256, 3, 1], // ImageWidth
    [257, 3, 1], // ImageLength
    [258, 3, 8], // BitsPerSample
    [259, 3, 1], // Compression: none
    [262, 3, 1], // PhotometricInterpretation: BlackIsZero
    [273, 4, 174], // StripOffsets
    [277, 3, 1], // SamplesPerPixel
    [278, 3, 1], // RowsPerStrip
    [279, 4, 1], // StripByteCounts
    [282, 5, 158], // XResolution (offset of a RATIONAL)
    [283, 5, 166], // YResolution
    [296, 3, 2] // ResolutionUnit: inch
  ]
  const b = Buffer.alloc(175)
  b.write('II*\0', 0, 'latin1')
  b.writeUInt32LE(8, 4) // first IFD
  b.writeUInt16LE(entries.length, 8)
  entries.forEach(([tag, type, value], i) => {
    const at = 10 + i * 12
    b.writeUInt16LE(tag, at)
    b.writeUInt16LE(type, at + 2)
    b.writeUInt32LE(1, at + 4)
    if (type === 3) b.writeUInt16LE(value, at + 8)
    else b.writeUInt32LE(value, at + 8)
  })
  // next IFD offset at 10 + 12 * 12 = 154 stays 0
  b.writeUInt32LE(72, 158); b.writeUInt32LE(1, 162)
  b.writeUInt32LE(72, 166); b.writeUInt32LE(1, 170)
  b[174] = 0x80
  return b
})()

/** Every fixture the sniffer recognises, by the extension it should be stored under. */
export const SAMPLES: Record<string, { bytes: Buffer, contentType: string }> = {
  png: { bytes: makePng(1), contentType: 'image/png' },
  jpg: { bytes: makeJpeg(1), contentType: 'image/jpeg' },
  gif: { bytes: GIF, contentType: 'image/gif' },
  webp: { bytes: WEBP, contentType: 'image/webp' },
  avif: { bytes: AVIF, contentType: 'image/avif' },
  bmp: { bytes: BMP, contentType: 'image/bmp' },
  tiff: { bytes: TIFF, contentType: 'image/tiff' }
}
