/**
 * The web page at `/` (web/): sign in, quota, my dumps, a new dump, its progress and gallery.
 * It talks only to the public API, with the token in the Authorization header.
 *
 * Registered in the service's routes scope, and encapsulated itself: @fastify/static's
 * `sendFile` and @fastify/helmet's headers (a strict Content-Security-Policy) apply to these
 * routes only, neither to the API nor to a host the service is embedded in.
 *
 * The HTML and CSS are served from web/ in the package; the script is compiled from
 * web/*.ts to dist/web/ (`npm run build`). This module is found both as routes/web-page.ts
 * (sources, tsx) and as dist/routes/web-page.js (the build), so both folders are located
 * from the package's root.
 */
import { existsSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import helmet from '@fastify/helmet'
import fastifyStatic from '@fastify/static'

const here = dirname(fileURLToPath(import.meta.url))
const packageRoot = basename(dirname(here)) === 'dist' ? join(here, '..', '..') : join(here, '..')

export const WEB_DIR = join(packageRoot, 'web')
export const WEB_BUILD_DIR = join(packageRoot, 'dist', 'web')
/** The page's script modules, compiled from web/<name>.ts. */
const MODULES = new Set(['app', 'api'])

/** Only the page's own files, from its own origin; images also from the blob: URLs it makes. */
export const CONTENT_SECURITY_POLICY = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'blob:'],
  connectSrc: ["'self'"],
  formAction: ["'none'"],
  baseUri: ["'none'"],
  frameAncestors: ["'none'"]
}

export default async function webPage (fastify: FastifyInstance): Promise<void> {
  if (!existsSync(join(WEB_BUILD_DIR, 'app.js'))) fastify.log.warn(`the web page's script is not built (no ${WEB_BUILD_DIR}/app.js): run npm run build`)
  await fastify.register(helmet, {
    global: true,
    // not helmet's defaults: upgrade-insecure-requests would break a page served over plain http on a LAN
    contentSecurityPolicy: { useDefaults: false, directives: CONTENT_SECURITY_POLICY }
  })
  await fastify.register(fastifyStatic, { serve: false, root: WEB_DIR, cacheControl: false })
  const hidden = { schema: { hide: true } }

  fastify.get('/', hidden, async (request, reply) => {
    // the page's links are relative to it, so under a prefix it must be addressed as `/prefix/`
    const [path, query] = request.url.split('?', 2) as [string, string | undefined]
    if (!path.endsWith('/')) return reply.redirect(`${path}/${query === undefined ? '' : `?${query}`}`, 301)
    return reply.header('cache-control', 'no-cache').sendFile('index.html', WEB_DIR)
  })
  fastify.get('/web/style.css', hidden, async (_request, reply) => reply.header('cache-control', 'no-cache').sendFile('style.css', WEB_DIR))
  // the browser asks for an icon anyway: without one, every visit logs a 404
  fastify.get('/web/icon.svg', hidden, async (_request, reply) => reply.header('cache-control', 'no-cache').sendFile('icon.svg', WEB_DIR))
  fastify.get<{ Params: { module: string } }>('/web/:module', hidden, async (request, reply) => {
    const name = request.params.module.replace(/\.js$/, '')
    if (!request.params.module.endsWith('.js') || !MODULES.has(name)) return reply.callNotFound()
    return reply.header('cache-control', 'no-cache').sendFile(`${name}.js`, WEB_BUILD_DIR)
  })
}
