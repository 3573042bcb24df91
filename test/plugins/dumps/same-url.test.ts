import t from 'tap'
import { downloadKey, groupByDownload } from '../../../plugins/dumps/same-url.js'

t.test('URLs that name the same resource share a download key', async (t) => {
  t.equal(downloadKey('http://example.com/a.png'), downloadKey('HTTP://Example.COM:80/a.png#front'), 'scheme and host case, default port, fragment')
  t.not(downloadKey('http://example.com/a.png'), downloadKey('http://example.com/a.png?v=2'), 'the query counts')
  t.not(downloadKey('http://example.com/a.png'), downloadKey('https://example.com/a.png'), 'the scheme counts')
  t.not(downloadKey('http://example.com/A.png'), downloadKey('http://example.com/a.png'), "the path's case counts")
  t.equal(downloadKey('not a url'), 'not a url', 'what does not parse is compared as written')
})

t.test('images are grouped by download, first appearance first', async (t) => {
  const images = ['http://x/1', 'http://x/2', 'http://x/1#b', 'http://x/3', 'http://x/2'].map((url, i) => ({ imageId: i + 1, url }))
  t.same(groupByDownload(images).map((group) => group.map((image) => image.imageId)), [[1, 3], [2, 5], [4]])
  t.same(groupByDownload([]), [])
})
