import t from 'tap'
import { HEADER_LIMIT_BYTES, createDimensionReader, parseDimensions, type Dimensions } from '../../lib/image-dimensions.js'
import { sniffImageType } from '../../lib/sniff.js'
import { SAMPLES, makePng } from '../helpers/images.js'
import { sizedSamples } from '../helpers/sharp-images.js'

/** What the reader finds in `bytes` delivered in chunks of `size` bytes. */
function readInChunks (ext: string, bytes: Buffer, size: number): Dimensions | undefined {
  const reader = createDimensionReader(ext)
  for (let at = 0; at < bytes.length && !reader.done; at += size) reader.push(bytes.subarray(at, at + size))
  return reader.finish()
}

const samples = await sizedSamples()

t.test('every format, as sharp encodes it, has its width and height', async (t) => {
  for (const [name, sample] of Object.entries(samples)) {
    t.equal(sniffImageType(sample.bytes)?.ext, sample.ext, `${name}: sniffed as ${sample.ext}`)
    t.same(readInChunks(sample.ext, sample.bytes, sample.bytes.length), { width: sample.width, height: sample.height }, `${name}: whole body`)
  }
})

t.test('the answer does not depend on how the body is cut into chunks', async (t) => {
  for (const [name, sample] of Object.entries(samples)) {
    const expected = { width: sample.width, height: sample.height }
    // one-byte chunks only for the small files: a chunk per byte of megabytes takes long
    const sizes = sample.bytes.length < 20_000 ? [1, 7, 100, 4096, 65536] : [1000, 16384, 65536]
    for (const size of sizes) t.same(readInChunks(sample.ext, sample.bytes, size), expected, `${name}: chunks of ${size}`)
  }
})

t.test('a body cut short anywhere gives the right size or none, never a wrong one', async (t) => {
  for (const [name, sample] of Object.entries(samples)) {
    const step = Math.max(1, Math.floor(sample.bytes.length / 4000))
    let wrong = 0
    for (let length = 0; length < sample.bytes.length; length += step) {
      const found = readInChunks(sample.ext, sample.bytes.subarray(0, length), 1024)
      if (found !== undefined && (found.width !== sample.width || found.height !== sample.height)) wrong++
    }
    t.equal(wrong, 0, `${name}: no prefix gives a wrong size`)
  }
})

t.test('the hand-made fixtures of the test origin have their sizes too', async (t) => {
  const expected: Record<string, Dimensions> = {
    png: { width: 8, height: 8 },
    jpg: { width: 8, height: 8 },
    gif: { width: 1, height: 1 },
    webp: { width: 1, height: 1 },
    avif: { width: 1, height: 1 },
    bmp: { width: 1, height: 1 },
    tiff: { width: 1, height: 1 }
  }
  for (const [ext, { bytes }] of Object.entries(SAMPLES)) t.same(readInChunks(ext, bytes, 5), expected[ext], ext)
})

t.test('a header in a pooled Buffer is not read past the end of the body', async (t) => {
  // 20 bytes of a PNG (its size would be at bytes 16-23) inside a larger buffer holding the rest
  const png = makePng(1)
  t.equal(parseDimensions('png', png.subarray(0, 20)), undefined, 'an exact 20-byte copy has no size')
  t.equal(readInChunks('png', png.subarray(0, 20), 20), undefined, 'nor a 20-byte slice of the whole file')
})

t.test('lying and broken headers give no dimensions', async (t) => {
  const png = (width: number, height: number): Buffer => {
    const b = Buffer.from(makePng(1))
    b.writeUInt32BE(width, 16)
    b.writeUInt32BE(height, 20)
    return b
  }
  t.equal(parseDimensions('png', png(0, 8)), undefined, 'PNG of width 0')
  t.equal(parseDimensions('png', png(8, 2 ** 31)), undefined, 'PNG taller than PNG allows')
  t.same(parseDimensions('png', png(2 ** 31 - 1, 1)), { width: 2 ** 31 - 1, height: 1 }, 'the largest PNG allowed')

  const jpeg = Buffer.from(samples['jpeg baseline']!.bytes)
  jpeg.writeUInt16BE(0xfff0, 4) // the first segment claims to run past the end of the file
  t.equal(readInChunks('jpg', jpeg, 100), undefined, 'JPEG segment longer than the file')

  const tiff = Buffer.from(samples.tiff!.bytes)
  tiff.writeUInt32LE(tiff.length + 10, 4)
  t.equal(readInChunks('tiff', tiff, 100), undefined, 'TIFF directory past the end of the file')
  tiff.writeUInt32LE(4, 4)
  t.equal(readInChunks('tiff', tiff, 100), undefined, 'TIFF directory inside its own header')

  const gif = Buffer.from(samples.gif!.bytes)
  gif.writeUInt16LE(0, 6)
  t.equal(readInChunks('gif', gif, 100), undefined, 'GIF of width 0')

  t.equal(parseDimensions('png', samples['jpeg baseline']!.bytes), undefined, 'a JPEG stored as a PNG is not read as one')
})

t.test('a frame header past the search limit gives no dimensions', async (t) => {
  // a JPEG whose first segment (a COM) is longer than HEADER_LIMIT_BYTES cannot exist
  // (segments are < 64 KiB), so a chain of them: APP segments of 60 KiB up to the limit
  const body = samples['jpeg baseline']!.bytes
  const segment = Buffer.alloc(4 + 60_000)
  segment.writeUInt16BE(0xffe5, 0)
  segment.writeUInt16BE(60_002, 2)
  const count = Math.ceil(HEADER_LIMIT_BYTES / segment.length)
  const far = Buffer.concat([body.subarray(0, 2), ...Array.from({ length: count }, () => segment), body.subarray(2)])
  const near = Buffer.concat([body.subarray(0, 2), ...Array.from({ length: count - 2 }, () => segment), body.subarray(2)])
  t.equal(readInChunks('jpg', far, 65536), undefined, `frame header at ${far.length - body.length} bytes`)
  t.same(readInChunks('jpg', near, 65536), { width: 300, height: 200 }, `frame header at ${near.length - body.length} bytes`)
})
