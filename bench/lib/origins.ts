/**
 * Where the images come from. Static images (throughput, memory, cost growth) are served
 * by nginx from files in a temporary folder; when nginx is not installed (the smoke run in
 * CI may not have it) the Node test origin serves the same bytes instead, and the report
 * says so. Delayed answers always come from the Node test origin (`/delay/<ms>/png/<n>`).
 */
import { mkdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { makePng } from '../../test/helpers/images.js'
import { startOrigin, type Origin } from '../../test/helpers/origin.js'
import { findNginx, NGINX_INSTALL_HINT, startNginx, type Nginx } from './nginx.js'

export interface Origins {
  kind: 'nginx' | 'node'
  /** what serves the static images, for the report */
  description: string
  /** set when nginx was wanted but is missing */
  fallbackReason?: string
  /** URL of distinct small image `n` (0 ≤ n < smallCount); `copy` makes further distinct URLs of the same bytes */
  small (n: number, copy?: number): string
  smallCount: number
  smallBytes: number
  /** URL of a `mib` MiB image (one of the sizes prepared); `i` makes the URL distinct */
  big (mib: number, i: number): string
  /** URL the Node origin answers after `ms` with PNG `n` */
  delayed (ms: number, n: number): string
  node: Origin
  stop (): Promise<void>
}

export interface OriginOptions {
  tmp: string
  smallCount: number
  smallBytes: number
  bigMiB: number[]
  /** false forces the Node origin even when nginx is installed */
  useNginx: boolean
}

export async function startOrigins (options: OriginOptions): Promise<Origins> {
  const node = await startOrigin()
  const bin = options.useNginx ? findNginx() : null
  let nginx: Nginx | undefined
  let fallbackReason: string | undefined
  if (bin === null) {
    fallbackReason = options.useNginx
      ? `nginx is not installed (${NGINX_INSTALL_HINT}); the Node test origin served the static images instead`
      : 'nginx was disabled (--no-nginx); the Node test origin served the static images instead'
  } else {
    const root = path.join(options.tmp, 'www')
    await mkdir(path.join(root, 'img'), { recursive: true })
    await mkdir(path.join(root, 'big'), { recursive: true })
    for (let n = 0; n < options.smallCount; n++) {
      await writeFile(path.join(root, 'img', `${n}.png`), makePng(n, { bytes: options.smallBytes }))
    }
    for (const mib of options.bigMiB) {
      await writeFile(path.join(root, 'big', `${mib}.png`), makePng(mib, { bytes: mib * 1024 * 1024 }))
    }
    nginx = await startNginx(bin, root, path.join(options.tmp, 'nginx'))
  }
  const base = nginx?.baseUrl
  return {
    kind: nginx === undefined ? 'node' : 'nginx',
    description: nginx === undefined
      ? `Node test origin (test/helpers/origin.ts, in the harness process) at ${node.baseUrl}`
      : `${nginx.version} (1 worker, sendfile, access_log off) serving files from a temporary folder`,
    ...(fallbackReason === undefined ? {} : { fallbackReason }),
    smallCount: options.smallCount,
    smallBytes: options.smallBytes,
    small: base === undefined
      ? (n, copy) => node.url(`/png/${n}?bytes=${options.smallBytes}${copy === undefined ? '' : `&copy=${copy}`}`)
      : (n, copy) => `${base}/img/${n}.png${copy === undefined ? '' : `?copy=${copy}`}`,
    big: base === undefined
      ? (mib, i) => node.url(`/png/${i}?bytes=${mib * 1024 * 1024}`)
      : (mib, i) => `${base}/big/${mib}.png?i=${i}`,
    delayed: (ms, n) => node.url(`/delay/${ms}/png/${n}`),
    node,
    async stop () {
      await nginx?.stop()
      await node.close()
    }
  }
}
