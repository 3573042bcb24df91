/**
 * The OpenAPI document at /openapi.json: valid OpenAPI 3.1 (checked by a real validator),
 * documenting every route the service registers (found with onRoute, so routes added later
 * are held to the same rules), each example valid against its schema (XML ones read back
 * by the service's own XML reader or written by its own writer), the page at /docs, and a
 * host app with its own @fastify/swagger that goes on working beside it.
 *
 * SQLite only: the document does not depend on the engine.
 */
import t, { type Test } from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Fastify, { type FastifyInstance, type RouteOptions } from 'fastify'
import swagger from '@fastify/swagger'
import { Validator } from '@seriousme/openapi-schema-validator'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { XMLValidator } from 'fast-xml-parser'
import { Value } from 'typebox/value'
import imageDump, { errorHandling, imageDumpWithDecorators } from '../../app.js'
import { loadConfig, type Config } from '../../config.js'
import { BatchSchema } from '../../schemas/batch.js'
import { createXmlReader } from '../../plugins/content-negotiation/xml-reader.js'
import { reshapeBatch } from '../../plugins/content-negotiation/batch.js'
import { toXml } from '../../plugins/content-negotiation/xml-writer.js'
import { createTestDatabase } from '../helpers/db.js'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any -- a parsed OpenAPI document, walked freely

async function serviceConfig (t: Test): Promise<Config> {
  const database = await createTestDatabase('sqlite')
  const storageDir = await mkdtemp(join(tmpdir(), 'image-dump-docs-'))
  t.teardown(async () => {
    await database.drop()
    await rm(storageDir, { recursive: true, force: true })
  })
  return loadConfig({
    DATABASE_URL: database.url,
    STORAGE_DIR: storageDir,
    USERS_FILE: new URL('../../users.txt', import.meta.url).pathname,
    LOG_LEVEL: 'silent'
  })
}

/** The service as buildApp builds it, and every route it registered, as onRoute saw them. */
async function serviceWithRoutes (t: Test): Promise<{ app: FastifyInstance, routes: RouteOptions[] }> {
  const app = Fastify()
  const routes: RouteOptions[] = []
  app.addHook('onRoute', (route) => { routes.push(route) })
  await app.register(errorHandling)
  await app.register(imageDumpWithDecorators, { config: await serviceConfig(t) })
  await app.ready()
  t.teardown(() => app.close())
  return { app, routes }
}

const openapiPath = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')

async function documentOf (app: FastifyInstance, url = '/openapi.json'): Promise<Json> {
  const response = await app.inject({ method: 'GET', url })
  if (response.statusCode !== 200) throw new Error(`GET ${url}: ${response.statusCode} ${response.body}`)
  return response.json()
}

async function assertValidOpenApi (t: Test, document: Json, what: string): Promise<void> {
  const validator = new Validator()
  const result = await validator.validate(structuredClone(document))
  t.equal(validator.version, '3.1', `${what}: an OpenAPI 3.1 document`)
  t.ok(result.valid, `${what}: valid OpenAPI 3.1${result.valid ? '' : `: ${JSON.stringify(result.errors).slice(0, 2000)}`}`)
}

const { app, routes } = await serviceWithRoutes(t)
const document = await documentOf(app)

t.test('the document is valid OpenAPI 3.1', async (t) => {
  await assertValidOpenApi(t, document, '/openapi.json')
  t.same(Object.keys(document.components.securitySchemes).sort(), ['imageDumpBasic', 'imageDumpBearer', 'imageDumpMetrics'])
  t.match(document.components.securitySchemes.imageDumpBearer, { type: 'http', scheme: 'bearer' })
})

t.test('every route the service registers is documented', async (t) => {
  const documented = routes.filter((route) => route.method !== 'HEAD' && (route.schema as Json | undefined)?.['hide'] !== true)
  // the API itself, at least: a route that goes missing from the service fails here too
  t.ok(documented.length >= 6, `${documented.length} routes to document`)
  for (const route of documented) {
    for (const method of [route.method].flat()) {
      const name = `${method} ${route.url}`
      const operation = document.paths[openapiPath(route.url)]?.[method.toLowerCase()] as Json | undefined
      if (operation === undefined) {
        t.fail(`${name} is not in the document`)
        continue
      }
      t.type(operation.summary, 'string', `${name} has a summary`)
      t.ok(operation.tags?.length > 0, `${name} has a tag`)
      const codes = Object.keys(operation.responses)
      t.ok(codes.some((code) => code.startsWith('2')), `${name} documents its success (${codes.join(', ')})`)
      t.ok(codes.includes('500'), `${name} documents 500`)
      for (const code of codes) t.type(operation.responses[code].description, 'string', `${name} ${code} is described`)
      for (const code of codes.filter((c) => Number(c) >= 400)) {
        const content = operation.responses[code].content ?? {}
        t.ok(content['application/json'] !== undefined && content['application/xml'] !== undefined, `${name} ${code} is documented in JSON and XML`)
      }
      const authenticated = [route.onRequest, route.preHandler].flat().includes(app.imageDumpAuth.authenticate)
      if (authenticated) {
        t.same(operation.security, [{ imageDumpBearer: [] }], `${name} takes the Bearer token`)
        t.ok(codes.includes('401'), `${name} documents 401`)
      }
      if (route.schema?.body !== undefined) {
        t.ok(['400', '413', '415'].every((code) => codes.includes(code)), `${name} documents 400, 413 and 415 for its body`)
      }
      if ([route.preHandler].flat().includes(app.quota.enforce)) {
        t.ok(codes.includes('429'), `${name} documents the quota's 429`)
        t.ok(operation.responses['429'].headers?.['Retry-After'] !== undefined, `${name}: the 429 has Retry-After`)
        for (const code of codes.filter((c) => c.startsWith('2'))) {
          t.same(Object.keys(operation.responses[code].headers ?? {}).filter((h) => h.startsWith('RateLimit-')).sort(),
            ['RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'], `${name} ${code} has the quota headers`)
        }
      }
    }
  }
})

t.test('bodies and answers are documented in JSON and XML', async (t) => {
  const dump = document.paths['/v1/dumps'].post
  t.same(Object.keys(dump.requestBody.content).sort(), ['application/json', 'application/xml', 'text/xml'])
  for (const code of ['200', '202']) t.same(Object.keys(dump.responses[code].content).sort(), ['application/json', 'application/xml'])
  t.match(dump.responses['202'].headers, { Location: {}, 'Preference-Applied': {} })
  t.same(Object.keys(document.paths['/v1/auth/token'].post.requestBody.content).sort(), ['application/json', 'application/x-www-form-urlencoded'])
})

/** A media object's examples, by name (a lone `example` is named so). */
function examplesOf (media: Json): Array<[string, unknown]> {
  const examples: Array<[string, unknown]> = []
  if ('example' in media) examples.push(['example', media.example])
  for (const [name, example] of Object.entries((media.examples ?? {}) as Json)) examples.push([name, example.value])
  return examples
}

/** Every media object of the document with the examples it carries, named by where it is. */
function mediaExamples (): Array<{ where: string, type: string, schema: Json, examples: Array<[string, unknown]>, siblings: Json }> {
  const found: Array<{ where: string, type: string, schema: Json, examples: Array<[string, unknown]>, siblings: Json }> = []
  for (const [path, operations] of Object.entries(document.paths as Json)) {
    for (const [method, operation] of Object.entries(operations as Json)) {
      const contents: Array<[string, Json]> = []
      if (operation.requestBody !== undefined) contents.push([`${method} ${path} body`, operation.requestBody.content])
      for (const [code, response] of Object.entries(operation.responses as Json)) {
        if (response.content !== undefined) contents.push([`${method} ${path} ${code}`, response.content])
      }
      for (const [where, content] of contents) {
        for (const [type, media] of Object.entries(content)) {
          found.push({ where: `${where} ${type}`, type, schema: media.schema, examples: examplesOf(media), siblings: content })
        }
      }
    }
  }
  return found
}

t.test('every example validates against its schema', async (t) => {
  const ajv = new Ajv2020({ strict: false, allErrors: true })
  const readXml = createXmlReader()
  let counted = 0
  for (const { where, type, schema, examples, siblings } of mediaExamples()) {
    for (const [name, value] of examples) {
      counted++
      if (type === 'application/json' || type === 'application/x-www-form-urlencoded') {
        const validate = ajv.compile(schema)
        t.ok(validate(value), `${where} example ${name} is valid${validate.errors ? `: ${ajv.errorsText(validate.errors)}` : ''}`)
        continue
      }
      t.type(value, 'string', `${where} example ${name} is text`)
      t.equal(XMLValidator.validate(value as string), true, `${where} example ${name} is well-formed XML`)
      const json = examplesOf(siblings['application/json'] ?? {}).find(([twin]) => twin === name)?.[1]
      t.not(json, undefined, `${where} example ${name} has a JSON twin`)
      if (where.includes(' body ')) {
        // what the service itself reads out of the XML example is the JSON example, and a valid batch
        const batch = reshapeBatch(readXml(value as string), { maxItems: 100, maxImages: 100 })
        t.ok(Value.Check(BatchSchema, batch), `${where} example ${name}, as the service reads it, is a valid batch`)
        t.same(batch, json, `${where} example ${name} says what its JSON twin says`)
      } else {
        const root = (schema.xml as Json | undefined)?.name as string
        t.equal(value, toXml(json, root), `${where} example ${name} is its JSON twin as the service writes it in XML`)
      }
    }
  }
  t.ok(counted >= 20, `${counted} examples checked`)

  // examples kept inside schemas (an OpenAPI 3.1 schema may hold an `examples` list)
  const walk = (node: unknown, where: string): void => {
    if (typeof node !== 'object' || node === null) return
    const schema = node as Json
    if (Array.isArray(schema.examples) && typeof schema.type === 'string') {
      for (const example of schema.examples) t.ok(ajv.validate(schema, example), `${where}: schema example ${JSON.stringify(example).slice(0, 60)}`)
    }
    for (const [key, value] of Object.entries(schema)) walk(value, `${where}/${key}`)
  }
  walk(document.paths, '#/paths')
})

t.test('the page at /docs renders the same document', async (t) => {
  const page = await app.inject({ method: 'GET', url: '/docs' })
  t.equal(page.statusCode, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.body, /swagger-ui/i)
  const init = await app.inject({ method: 'GET', url: '/docs/static/swagger-initializer.js' })
  t.equal(init.statusCode, 200)
  t.same(await documentOf(app, '/docs/json'), document)
})

t.test('embedded in a host that has its own @fastify/swagger', async (t) => {
  const host = Fastify()
  await host.register(swagger, { openapi: { openapi: '3.1.0', info: { title: 'Host', version: '1.0.0' } } })
  host.get('/ping', { schema: { summary: 'the host\'s own route', response: { 200: { type: 'object', properties: { pong: { type: 'boolean' } } } } } }, async () => ({ pong: true }))
  await host.register(imageDump, { prefix: '/a', config: await serviceConfig(t) })
  await host.register(imageDump, { prefix: '/b', config: await serviceConfig(t), docs: false })
  host.get('/openapi.json', async () => host.swagger())
  await host.ready()
  t.teardown(() => host.close())

  const hosts = await documentOf(host)
  await assertValidOpenApi(t, hosts, "the host's document")
  t.equal(hosts.info.title, 'Host', "the host's swagger is its own")
  t.ok(hosts.paths['/ping']?.get !== undefined, "the host's document has the host's routes")
  t.match(hosts.paths['/a/v1/dumps']?.post, { security: [{ imageDumpBearer: [] }], responses: { 429: {} } },
    "and documents the service's routes as the service does, for a host's swagger sees them too")

  const ours = await documentOf(host, '/a/openapi.json')
  await assertValidOpenApi(t, ours, "the service's document under /a")
  t.equal(ours.info.title, 'Image Dump')
  const paths = Object.keys(ours.paths)
  t.ok(paths.length >= 6 && paths.every((path) => path.startsWith('/a/')), `only the service's routes, under its prefix: ${paths.join(' ')}`)
  t.ok(ours.paths['/a/v1/dumps']?.post !== undefined)
  t.equal((await host.inject({ method: 'GET', url: '/a/docs' })).statusCode, 200, 'its page, under the prefix')
  t.equal((await host.inject({ method: 'GET', url: '/b/openapi.json' })).statusCode, 404, 'docs: false serves none')
  t.equal((await host.inject({ method: 'GET', url: '/ping' })).json().pong, true, "the host's route answers")
})
