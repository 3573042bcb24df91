/**
 * Which images of a dump are the same download: their URLs name the same resource once
 * parsed as the fetcher parses them (WHATWG URL: scheme and host in lower case, a default
 * port dropped, the fragment, which is never sent, ignored). A URL that does not parse is
 * compared as written; it fails the same way each time.
 */
import type { ImageResult } from '../../schemas/dump.js'

/** The key two images share when one download serves both. */
export function downloadKey (raw: string): string {
  try {
    const url = new URL(raw)
    url.hash = ''
    return url.href
  } catch {
    return raw
  }
}

/**
 * The images grouped by download, in the order each download first appears; within a
 * group, in the order of the images. The first image of a group is the one downloaded.
 */
export function groupByDownload<T extends Pick<ImageResult, 'url'>> (images: readonly T[]): T[][] {
  const groups = new Map<string, T[]>()
  for (const image of images) {
    const key = downloadKey(image.url)
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [image])
    else group.push(image)
  }
  return [...groups.values()]
}
