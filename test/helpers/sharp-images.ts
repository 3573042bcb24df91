/**
 * Real image files of known size in every stored format, encoded by sharp (libvips) the
 * way cameras and image pipelines write them, for the dimension tests. BMP, which sharp
 * cannot write, is built by hand. Built once per test process.
 */
import sharp, { type Sharp } from 'sharp'

export interface SizedSample {
  /** extension lib/sniff.ts stores it under */
  ext: string
  bytes: Buffer
  /** the size a browser displays (EXIF orientation applied) */
  width: number
  height: number
}

const WIDTH = 300
const HEIGHT = 200

const flat = (channels: 3 | 4 = 3): Sharp => sharp({
  create: { width: WIDTH, height: HEIGHT, channels, background: { r: 200, g: 30, b: 60, alpha: 0.5 } }
})
// noise does not compress: a file well past the first chunks and the header search limit
const noisy = (width: number, height: number): Sharp => sharp({
  create: { width, height, channels: 3, background: '#808080', noise: { type: 'gaussian', mean: 128, sigma: 40 } }
})

/** A bottom-up 24-bit BMP (BITMAPINFOHEADER), or top-down with a negative height. */
export function makeBmp (width: number, height: number, topDown = false): Buffer {
  const row = Math.ceil((width * 3) / 4) * 4
  const b = Buffer.alloc(54 + row * height)
  b.write('BM', 0, 'latin1')
  b.writeUInt32LE(b.length, 2)
  b.writeUInt32LE(54, 10)
  b.writeUInt32LE(40, 14)
  b.writeInt32LE(width, 18)
  b.writeInt32LE(topDown ? -height : height, 22)
  b.writeUInt16LE(1, 26)
  b.writeUInt16LE(24, 28)
  b.writeUInt32LE(row * height, 34)
  return b
}

/** An OS/2 1.x BMP (12-byte BITMAPCOREHEADER, 16-bit sizes). */
export function makeCoreBmp (width: number, height: number): Buffer {
  const row = Math.ceil((width * 3) / 4) * 4
  const b = Buffer.alloc(26 + row * height)
  b.write('BM', 0, 'latin1')
  b.writeUInt32LE(b.length, 2)
  b.writeUInt32LE(26, 10)
  b.writeUInt32LE(12, 14)
  b.writeUInt16LE(width, 18)
  b.writeUInt16LE(height, 20)
  b.writeUInt16LE(1, 22)
  b.writeUInt16LE(24, 24)
  return b
}

let built: Promise<Record<string, SizedSample>> | undefined

/** Every sample by name; names say what is special about each. */
export function sizedSamples (): Promise<Record<string, SizedSample>> {
  built ??= (async () => {
    const s = (ext: string, bytes: Buffer, width = WIDTH, height = HEIGHT): SizedSample => ({ ext, bytes, width, height })
    // a large XMP packet puts the JPEG frame header some 100 KB into the file
    const xmp = `<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description>${'x'.repeat(60_000)}</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>`
    return {
      png: s('png', await flat().png().toBuffer()),
      'png interlaced': s('png', await flat(4).png({ progressive: true }).toBuffer()),
      'jpeg baseline': s('jpg', await flat().jpeg().toBuffer()),
      'jpeg progressive': s('jpg', await flat().jpeg({ progressive: true }).toBuffer()),
      // EXIF orientation 6: stored 300×200, shown turned a quarter, 200×300
      'jpeg EXIF orientation 6': s('jpg', await flat().jpeg().withMetadata({ orientation: 6 }).toBuffer(), HEIGHT, WIDTH),
      'jpeg EXIF orientation 8 progressive': s('jpg', await flat().jpeg({ progressive: true }).withMetadata({ orientation: 8 }).toBuffer(), HEIGHT, WIDTH),
      // orientation 3 is a half turn: the size stays
      'jpeg EXIF orientation 3': s('jpg', await flat().jpeg().withMetadata({ orientation: 3 }).toBuffer()),
      'jpeg with large XMP and ICC': s('jpg', await flat().jpeg().withIccProfile('p3').withXmp(xmp).toBuffer()),
      gif: s('gif', await flat().gif().toBuffer()),
      'webp lossy': s('webp', await flat().webp().toBuffer()),
      'webp lossless': s('webp', await flat().webp({ lossless: true }).toBuffer()),
      'webp extended (alpha)': s('webp', await flat(4).webp().toBuffer()),
      avif: s('avif', await flat().avif().toBuffer()),
      'avif with alpha': s('avif', await flat(4).avif().toBuffer()),
      bmp: s('bmp', makeBmp(WIDTH, HEIGHT)),
      'bmp top-down': s('bmp', makeBmp(WIDTH, HEIGHT, true)),
      'bmp OS/2': s('bmp', makeCoreBmp(WIDTH, HEIGHT)),
      tiff: s('tiff', await flat().tiff().toBuffer()),
      'tiff uncompressed': s('tiff', await flat().tiff({ compression: 'none' }).toBuffer()),
      // libtiff writes the directory after the pixels: here some 2.4 MB into the file
      'tiff, directory at the end of a large file': s('tiff', await noisy(1200, 700).tiff({ compression: 'none' }).toBuffer(), 1200, 700),
      'png large': s('png', await noisy(1200, 700).png().toBuffer(), 1200, 700)
    }
  })()
  return built
}
