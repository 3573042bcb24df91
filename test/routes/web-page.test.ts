/**
 * The web page at / (routes/web-page.ts, web/), driven in a real browser: Debian's chromium,
 * through playwright-core. Signs in, sends a 20-image batch (with failures) to a real origin,
 * follows its progress to the end, reads the gallery (thumbnails decoded by the browser,
 * failures with their reasons), the quota gauge, the Content-Security-Policy, and the page
 * at a phone's width.
 *
 * Without a browser that starts, the test is skipped and says why; in CI (CI=true, or
 * .ci/run, which sets FAULTS_REQUIRED=true and installs chromium) that is a failure instead.
 */
import t, { type Test } from 'tap'
import { existsSync } from 'node:fs'
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core'
import type { FastifyInstance } from 'fastify'
import { buildTestApp, sampleUsers } from '../helpers/app.js'
import { buildDist } from '../helpers/build.js'
import { enginesUnderTest } from '../helpers/db.js'
import { startOrigin } from '../helpers/origin.js'
import { CONTENT_SECURITY_POLICY, WEB_BUILD_DIR } from '../../routes/web-page.js'

const required = process.env.CI === 'true' || process.env.FAULTS_REQUIRED === 'true'
const CHROMIUM = '/usr/bin/chromium'

// the page's script is compiled by the build (web/*.ts to dist/web/)
await buildDist()
t.ok(existsSync(`${WEB_BUILD_DIR}/app.js`), 'the build compiled the page\'s script')

let browser: Browser | undefined
let unavailable = ''
try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], timeout: 20_000 })
} catch (error) {
  unavailable = `chromium cannot be started from ${CHROMIUM} (install it with apt-get install -y chromium): ${String(error).split('\n')[0]}`
}
if (browser === undefined) {
  if (required) t.fail(unavailable)
  else t.comment(`browser test skipped: ${unavailable}`)
} else {
  const open = browser
  t.teardown(() => open.close())
  const origin = await startOrigin()
  t.teardown(() => origin.close())
  for (const engine of enginesUnderTest(t)) t.test(`${engine}: the page in a browser`, (t) => pageTest(t, open, origin, engine))
}

async function listen (app: FastifyInstance): Promise<string> {
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('not listening on TCP')
  return `http://127.0.0.1:${address.port}/`
}

type Origin = Awaited<ReturnType<typeof startOrigin>>

/** Reads the page's quota gauge. */
const gauge = (page: Page): Promise<{ value: number, max: number }> =>
  page.$eval('#quota-gauge', (meter) => ({ value: (meter as HTMLMeterElement).value, max: (meter as HTMLMeterElement).max }))

async function pageTest (t: Test, browser: Browser, origin: Origin, engine: 'sqlite' | 'mysql'): Promise<void> {
  const { app } = await buildTestApp(t, engine)
  const base = await listen(app)
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } })
  t.teardown(() => context.close())
  const page = await context.newPage()
  const console: string[] = []
  page.on('console', (message: ConsoleMessage) => { if (['error', 'warning'].includes(message.type())) console.push(message.text()) })
  page.on('pageerror', (error) => { console.push(`uncaught: ${error.message}`) })
  page.setDefaultTimeout(15_000)

  const answer = await page.goto(base)
  t.equal(answer?.status(), 200, 'the page is served at /')
  const csp = answer?.headers()['content-security-policy'] ?? ''
  t.match(csp, /default-src 'none'/, 'with a Content-Security-Policy that allows nothing by default')
  t.match(csp, /script-src 'self'[;$]/, 'scripts from the page\'s own origin only (no inline script)')
  t.match(csp, /img-src 'self' blob:/, 'images from its origin and the blob: URLs it makes')
  t.equal(Object.keys(CONTENT_SECURITY_POLICY).length, csp.split(';').length, 'and no other directive')

  // sign in: the page hashes the password and keeps the token out of URLs and cookies
  await page.fill('input[name=username]', sampleUsers.gold.username)
  await page.fill('input[name=password]', sampleUsers.gold.password)
  await page.click('#sign-in button[type=submit]')
  await page.waitForSelector('#signed-in:not([hidden])')
  await page.waitForFunction(() => (document.getElementById('quota-text')?.textContent ?? '') !== '')
  const before = await gauge(page)
  t.same(before, { value: 0, max: 100 }, 'the gold plan\'s quota, none of it used')
  t.same(await context.cookies(), [], 'no cookie is set')

  // 20 images: 15 that store (one held at the origin until the page shows the others), 5 failures
  const key = `web-page-${engine}-${Date.now()}`
  const stored = [
    ...Array.from({ length: 12 }, (_, i) => origin.url(`/png/${i + 1}`)),
    origin.url('/jpeg/1'), origin.url('/gif'), origin.url(`/held/${key}/png/20`)
  ]
  const failed: Record<string, RegExp> = {
    [origin.url('/status/404')]: /^HTTP_ERROR 404$/,
    [origin.url('/status/410')]: /^HTTP_ERROR 410$/,
    [origin.url('/html')]: /^NOT_AN_IMAGE: /,
    [origin.url('/svg')]: /^NOT_AN_IMAGE: /,
    [origin.url('/lying-png')]: /^NOT_AN_IMAGE: /
  }
  const urls = [...stored.slice(0, 7), ...Object.keys(failed), ...stored.slice(7)]
  const xml = '<items>' + [0, 1, 2, 3].map((n) =>
    `<item><name>Product ${n}</name><images>${urls.slice(n * 5, n * 5 + 5).map((url) => `<url>${url.replace(/&/g, '&amp;')}</url>`).join('')}</images></item>`).join('') + '</items>'
  // uploaded as a file (the page reads it into the text area); sent in XML, so the record and events come in XML too
  await page.setInputFiles('input[type=file]', { name: 'batch.xml', mimeType: 'application/xml', buffer: Buffer.from(xml) })
  await page.waitForFunction(() => (document.querySelector('textarea') as HTMLTextAreaElement).value.startsWith('<items>'))
  await page.click('#new-dump button[type=submit]')

  // live: 19 outcomes shown while the last image is still held at the origin
  await page.waitForFunction(() => (document.getElementById('dump-progress') as HTMLProgressElement).value === 19)
  t.match(await page.textContent('#dump-counts'), /^PENDING: 19 of 20 done, 14 stored, 5 failed$/, 'progress is shown while the dump runs')
  t.equal(await page.$$eval('#gallery li', (entries) => entries.filter((entry) => entry.dataset['status'] === 'PENDING').length), 1,
    'the held image waits in the gallery')
  origin.release(key)
  await page.waitForFunction(() => /^SUCCESS|^PARTIAL/.test(document.getElementById('dump-counts')?.textContent ?? ''))
  t.same(await page.$eval('#dump-progress', (bar) => [(bar as HTMLProgressElement).value, (bar as HTMLProgressElement).max]), [20, 20], 'the progress reaches the end')
  t.equal(await page.textContent('#dump-counts'), 'PARTIAL: 20 of 20 done, 15 stored, 5 failed', 'and says how it ended')

  // the gallery: every stored image decoded by the browser, every failure with its reason
  await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('#gallery img')].filter((img) => img.complete && img.naturalWidth > 0).length === 15)
  const gallery = await page.$$eval('#gallery li', (entries) => entries.map((entry) => {
    const img = entry.querySelector('img')
    return {
      status: entry.dataset['status'],
      url: entry.querySelector('.url')?.textContent,
      details: entry.querySelector('.details')?.textContent,
      reason: entry.querySelector('.reason')?.textContent,
      src: img?.src,
      naturalWidth: img?.naturalWidth
    }
  }))
  t.equal(gallery.length, 20, '20 entries in the gallery')
  t.same(gallery.map((entry) => entry.url), urls, 'in the order of the batch')
  const successes = gallery.filter((entry) => entry.status === 'SUCCESS')
  t.same(successes.map((entry) => entry.url).sort(), [...stored].sort(), 'the 15 stored images')
  t.ok(successes.every((entry) => (entry.naturalWidth ?? 0) > 0 && entry.src?.startsWith('blob:') === true), 'each shown from a blob: URL and decoded (naturalWidth > 0)')
  t.match(successes.find((entry) => entry.url === origin.url('/png/1'))?.details, /^image\/png · \d+ B · 8×8$/, 'a PNG: its type, size and 8×8')
  t.match(successes.find((entry) => entry.url === origin.url('/gif'))?.details, /^image\/gif · \d+ B · 1×1$/, 'the GIF: 1×1')
  const failures = gallery.filter((entry) => entry.status === 'FAILURE')
  t.same(failures.map((entry) => entry.url), Object.keys(failed), 'the 5 failures')
  for (const entry of failures) t.match(entry.reason, failed[entry.url!]!, `${entry.url}: its reason`)

  await page.waitForFunction((used) => (document.getElementById('quota-gauge') as HTMLMeterElement).value === used, before.value + 1)
  t.same(await gauge(page), { value: before.value + 1, max: 100 }, 'the quota gauge moved by one')
  t.equal(await page.textContent('#quota-text'), 'gold: 1 of 100 dumps used this hour, 99 left', 'and says so')
  t.match(await page.textContent('#dumps'), /#1 PARTIAL 20\/20/, 'the dump is in my dumps')

  // a second dump, pasted as JSON
  await page.fill('textarea[name=batch]', JSON.stringify({ items: [{ name: 'Pasted', images: [origin.url('/png/30'), origin.url('/status/404')] }] }))
  await page.click('#new-dump button[type=submit]')
  await page.waitForFunction(() => /^#2 PARTIAL 2\/2/.test(document.querySelector('#dumps li')?.textContent ?? ''))
  await page.waitForFunction(() => document.getElementById('dump-title')?.textContent === 'Dump #2' &&
    document.querySelectorAll('#gallery li').length === 2 && [...document.querySelectorAll<HTMLImageElement>('#gallery img')].every((img) => img.naturalWidth > 0))
  t.equal(await page.textContent('#gallery .reason'), 'HTTP_ERROR 404', 'a pasted JSON batch: its gallery with the failure\'s reason')
  t.equal((await gauge(page)).value, before.value + 2, 'the gauge moved again')

  // back to the first dump from the list: its gallery again, all from the record
  await page.click('#dumps li:last-child button')
  await page.waitForFunction(() => document.getElementById('dump-title')?.textContent === 'Dump #1' &&
    [...document.querySelectorAll<HTMLImageElement>('#gallery img')].filter((img) => img.naturalWidth > 0).length === 15)
  t.equal(await page.$$eval('#gallery li', (entries) => entries.length), 20, 'an earlier dump opened from the list shows its 20 entries')

  // the README's picture: WEB_SCREENSHOT=docs/web-page.png npx tap test/routes/web-page.test.ts
  if (process.env.WEB_SCREENSHOT !== undefined && engine === 'sqlite') await page.screenshot({ path: process.env.WEB_SCREENSHOT, fullPage: true })

  // a phone's width: one column, nothing wider than the screen
  await page.setViewportSize({ width: 360, height: 740 })
  const layout = await page.evaluate(() => {
    const aside = document.querySelector('aside')!.getBoundingClientRect()
    const dump = document.getElementById('dump')!.getBoundingClientRect()
    return { scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth, asideBottom: aside.bottom, dumpTop: dump.top, dumpWidth: dump.width }
  })
  t.ok(layout.scrollWidth <= layout.clientWidth, `no horizontal scroll at 360 px (${layout.scrollWidth} <= ${layout.clientWidth})`)
  t.ok(layout.dumpTop >= layout.asideBottom && layout.dumpWidth <= 360, 'one column: the gallery below the controls')

  t.same(console.filter((text) => /Content.Security.Policy/i.test(text)), [], 'no Content-Security-Policy violation')
  t.same(console, [], 'no error or warning in the console')

  await page.click('#sign-out')
  await page.waitForSelector('#signed-out:not([hidden])')
  t.equal(await page.evaluate(() => sessionStorage.length), 0, 'signing out forgets the token')
  t.equal(await page.$$eval('#gallery li', (entries) => entries.length), 0, 'and the gallery')
}
