import t from 'tap'
import { SNIFF_BYTES, contentTypeOfExtension, sniffImageType } from '../../lib/sniff.js'
import { SAMPLES, makeJpeg, makePng } from '../helpers/images.js'

t.test('recognises every supported raster format from its first bytes', async (t) => {
  for (const [ext, { bytes, contentType }] of Object.entries(SAMPLES)) {
    t.same(sniffImageType(bytes), { contentType, ext }, `${ext}: whole file`)
    t.same(sniffImageType(bytes.subarray(0, SNIFF_BYTES)), { contentType, ext }, `${ext}: first ${SNIFF_BYTES} bytes`)
  }
})

t.test('the type comes from the bytes alone', async (t) => {
  t.equal(sniffImageType(makePng(7, { bytes: 4096 }))?.ext, 'png')
  t.equal(sniffImageType(makeJpeg(7))?.ext, 'jpg')
  t.equal(sniffImageType(Buffer.from('GIF87a\x01\x00\x01\x00', 'latin1'))?.ext, 'gif', 'GIF87a too')
  t.equal(sniffImageType(Buffer.from('MM\0*\0\0\0\x08', 'latin1'))?.ext, 'tiff', 'big-endian TIFF')
})

t.test('AVIF is an ftyp box with an avif/avis brand, major or compatible', async (t) => {
  const ftyp = (major: string, ...compatible: string[]): Buffer => {
    const size = 16 + 4 * compatible.length
    const b = Buffer.alloc(size)
    b.writeUInt32BE(size, 0)
    b.write(`ftyp${major}`, 4, 'latin1')
    compatible.forEach((brand, i) => b.write(brand, 16 + 4 * i, 'latin1'))
    return b
  }
  t.equal(sniffImageType(ftyp('avif', 'mif1'))?.contentType, 'image/avif')
  t.equal(sniffImageType(ftyp('avis', 'msf1'))?.contentType, 'image/avif', 'image sequence')
  t.equal(sniffImageType(ftyp('mif1', 'miaf', 'avif'))?.contentType, 'image/avif', 'generic major brand, avif compatible')
  t.equal(sniffImageType(ftyp('heic', 'mif1', 'heic')), null, 'HEIC is not AVIF')
  t.equal(sniffImageType(ftyp('isom', 'mp41')), null, 'an MP4 video is not an image')
})

t.test('anything else is not an image', async (t) => {
  const cases: Record<string, Buffer> = {
    empty: Buffer.alloc(0),
    html: Buffer.from('<!doctype html><html><body>hello</body></html>'),
    svg: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'),
    'svg with XML prolog': Buffer.from('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'),
    text: Buffer.from('just some text, long enough to fill the sniffing window'),
    json: Buffer.from('{"image":"https://example.com/a.png"}'),
    gzip: Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03]),
    pdf: Buffer.from('%PDF-1.7\n%âãÏÓ\n1 0 obj'),
    'RIFF that is not WebP (WAV)': Buffer.from('RIFF\x24\x00\x00\x00WAVEfmt ', 'latin1'),
    'text starting with BM': Buffer.from('BMW 3 series, 2019, very good condition'),
    'truncated PNG signature': makePng(1).subarray(0, 7),
    'two JPEG bytes': Buffer.from([0xff, 0xd8]),
    ICO: Buffer.from([0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0])
  }
  for (const [name, bytes] of Object.entries(cases)) {
    t.equal(sniffImageType(bytes), null, name)
  }
})

t.test('contentTypeOfExtension maps stored extensions back to their types', async (t) => {
  for (const [ext, { contentType }] of Object.entries(SAMPLES)) {
    t.equal(contentTypeOfExtension(ext), contentType, ext)
  }
  for (const ext of ['part', 'svg', 'html', 'jpeg', 'toString', '__proto__', '']) {
    t.equal(contentTypeOfExtension(ext), undefined, `${JSON.stringify(ext)} is not a stored image extension`)
  }
})
