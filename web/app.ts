/**
 * The page at `/`: sign in, the quota, my dumps, a new dump, and one dump's progress and
 * gallery. Stored images are fetched with the token and shown from blob: URLs.
 */
import { ApiError, apiUrl, call, followEvents, readDocument, readJson, sha256Hex, token } from './api.js'

interface Quota { plan: string, limit: number, used: number, remaining: number, resetSeconds: number }
interface Progress { total: number, done: number, succeeded: number, failed: number }
interface DumpSummary { requestId: number, retryOf?: number, status: string, createdAt: string, progress: Progress }
interface ImageError { type: string, code?: string, httpStatus?: number, message?: string }
interface ImageOutcome {
  imageId: number
  url: string
  status: string
  location?: string
  contentType?: string
  bytes?: number
  width?: number
  height?: number
  error?: ImageError
}
interface DumpRecord { requestId: number, status: string, progress?: Progress, items: Array<{ itemId: number, name: string, images: ImageOutcome[] }> }

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T

/** What belongs to the dump on show: its entries, blob URLs and stream, dropped together. */
let shown: { requestId: number, entries: Map<number, HTMLLIElement>, blobs: string[], stop: AbortController } | undefined
let nextCursor: string | null = null

function say (text: string): void {
  const message = $('message')
  message.textContent = text
  message.hidden = text === ''
}

/** Every failure ends here: a 401 means the token is gone, anything else is said. */
function fail (error: unknown): void {
  if (error instanceof DOMException && error.name === 'AbortError') return
  if (error instanceof ApiError && error.status === 401) {
    signOut()
    say('Your session has ended: sign in again.')
    return
  }
  say(error instanceof Error ? error.message : String(error))
}

function run (task: () => Promise<void>): void {
  task().catch(fail)
}

function showSignedIn (signedIn: boolean): void {
  $('signed-out').hidden = signedIn
  $('signed-in').hidden = !signedIn
  $('who').hidden = !signedIn
}

function closeDump (): void {
  if (shown === undefined) return
  shown.stop.abort()
  for (const url of shown.blobs) URL.revokeObjectURL(url)
  shown = undefined
  $('gallery').replaceChildren()
  $('dump').hidden = true
}

function signOut (): void {
  closeDump()
  token.clear()
  $('dumps').replaceChildren()
  showSignedIn(false)
}

async function refreshQuota (): Promise<void> {
  const quota = await readJson<Quota>(await call(apiUrl('v1/quota')))
  const gauge = $<HTMLMeterElement>('quota-gauge')
  gauge.max = quota.limit
  gauge.high = quota.limit * 0.8
  gauge.value = quota.used
  $('quota-text').textContent = `${quota.plan}: ${quota.used} of ${quota.limit} dumps used this hour, ${quota.remaining} left` +
    // resetSeconds is 0 while a slot is free
    (quota.remaining === 0 ? `; the next frees in ${Math.ceil(quota.resetSeconds / 60)} min` : '')
}

function dumpLabel (dump: DumpSummary): string {
  const { done, total } = dump.progress
  const retry = dump.retryOf === undefined ? '' : ` (retry of #${dump.retryOf})`
  return `#${dump.requestId}${retry} ${dump.status} ${done}/${total} · ${new Date(dump.createdAt).toLocaleString()}`
}

async function loadDumps (more = false): Promise<void> {
  const query = more && nextCursor !== null ? `&cursor=${encodeURIComponent(nextCursor)}` : ''
  const page = await readJson<{ dumps: DumpSummary[], nextCursor: string | null }>(await call(apiUrl(`v1/dumps?limit=20${query}`)))
  const rows = page.dumps.map((dump) => {
    const button = document.createElement('button')
    button.type = 'button'
    button.dataset['requestId'] = String(dump.requestId)
    button.textContent = dumpLabel(dump)
    button.addEventListener('click', () => run(() => openDump(dump.requestId)))
    const li = document.createElement('li')
    li.append(button)
    return li
  })
  if (more) $('dumps').append(...rows)
  else $('dumps').replaceChildren(...rows)
  nextCursor = page.nextCursor
  $('more-dumps').hidden = nextCursor === null
  markCurrent()
}

function markCurrent (): void {
  for (const button of $('dumps').querySelectorAll('button')) {
    button.setAttribute('aria-current', String(shown !== undefined && button.dataset['requestId'] === String(shown.requestId)))
  }
}

function showProgress (progress: Progress, status: string): void {
  const bar = $<HTMLProgressElement>('dump-progress')
  bar.max = Math.max(progress.total, 1)
  bar.value = progress.done
  $('dump-counts').textContent = `${status}: ${progress.done} of ${progress.total} done, ${progress.succeeded} stored, ${progress.failed} failed`
}

function reason (error: ImageError | undefined): string {
  if (error === undefined) return 'failed'
  if (error.httpStatus !== undefined) return `${error.type} ${error.httpStatus}`
  const kind = error.code ?? error.type
  return error.message === undefined ? kind : `${kind}: ${error.message}`
}

function sizeOf (bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`
}

// A few image downloads at a time, so that a large dump does not open hundreds of requests.
const waiting: Array<() => Promise<void>> = []
let running = 0
function queue (task: () => Promise<void>): void {
  waiting.push(task)
  pump()
}
function pump (): void {
  while (running < 4 && waiting.length > 0) {
    const task = waiting.shift()!
    running++
    task().catch(fail).finally(() => { running--; pump() })
  }
}

function text (className: string, content: string): HTMLElement {
  const element = document.createElement('span')
  element.className = className
  element.textContent = content
  return element
}

/** Fills an image's gallery entry from its outcome (or leaves it pending). */
function renderOutcome (entry: HTMLLIElement, image: ImageOutcome): void {
  const current = shown
  if (current === undefined) return
  entry.className = image.status.toLowerCase()
  entry.dataset['status'] = image.status
  const url = text('url', image.url)
  if (image.status === 'SUCCESS' && image.location !== undefined) {
    const img = document.createElement('img')
    img.alt = image.url
    const details = [image.contentType ?? '', image.bytes === undefined ? '' : sizeOf(image.bytes),
      image.width !== undefined && image.height !== undefined ? `${image.width}×${image.height}` : ''].filter((part) => part !== '')
    entry.replaceChildren(img, text('details', details.join(' · ')), document.createElement('br'), url)
    const location = image.location
    queue(async () => {
      // an API path of the service, which the page is the root of (wherever a host mounted it)
      const blob = await (await call(apiUrl(location), { signal: current.stop.signal })).blob()
      if (shown !== current) return
      const blobUrl = URL.createObjectURL(blob)
      current.blobs.push(blobUrl)
      img.src = blobUrl
    })
  } else if (image.status === 'FAILURE') {
    entry.replaceChildren(text('reason', reason(image.error)), document.createElement('br'), url)
  } else {
    entry.replaceChildren(text('details', 'waiting…'), document.createElement('br'), url)
  }
}

async function openDump (requestId: number, justSent = false): Promise<void> {
  closeDump()
  const current = { requestId, entries: new Map<number, HTMLLIElement>(), blobs: [] as string[], stop: new AbortController() }
  shown = current
  markCurrent()
  const response = await call(apiUrl(`v1/dumps/${requestId}`), { signal: current.stop.signal })
  const record = await readJson<DumpRecord>(response)
  if (shown !== current) return
  $('dump').hidden = false
  $('dump-title').textContent = `Dump #${requestId}`
  const images = record.items.flatMap((item) => item.images)
  for (const image of images) {
    const entry = document.createElement('li')
    current.entries.set(image.imageId, entry)
    renderOutcome(entry, image)
  }
  $('gallery').replaceChildren(...current.entries.values())
  const count = (status: string): number => images.filter((image) => image.status === status).length
  showProgress(record.progress ?? { total: images.length, done: images.length - count('PENDING'), succeeded: count('SUCCESS'), failed: count('FAILURE') }, record.status)
  if (response.headers.get('x-dump-complete') !== 'true') {
    await followEvents(`v1/dumps/${requestId}/events`, (event) => {
      if (shown !== current) return
      const data = readDocument(event.data, '') as Record<string, unknown> | undefined
      if (data === undefined) return
      if (event.event === 'progress') showProgress(data as unknown as Progress, 'PENDING')
      else if (event.event === 'image') {
        const image = data as unknown as ImageOutcome
        const entry = current.entries.get(image.imageId)
        if (entry !== undefined) renderOutcome(entry, image)
      } else if (event.event === 'complete') showProgress(data['progress'] as Progress, String(data['status']))
    }, current.stop.signal)
  } else if (!justSent) return
  // the list still shows it running: it was listed before it completed
  if (shown === current) await loadDumps()
}

async function submitDump (form: HTMLFormElement): Promise<void> {
  const batch = (form.elements.namedItem('batch') as HTMLTextAreaElement).value.trim()
  const type = batch.startsWith('<') ? 'application/xml' : 'application/json'
  const response = await call(apiUrl('v1/dumps'), {
    method: 'POST',
    // the key makes a resend after a lost answer the same dump, not a second one
    headers: { 'content-type': type, prefer: 'respond-async', 'idempotency-key': crypto.randomUUID() },
    body: batch
  })
  const accepted = await readJson<{ requestId: number }>(response)
  say('')
  await Promise.all([refreshQuota(), loadDumps()])
  await openDump(accepted.requestId, true)
}

async function signIn (form: HTMLFormElement): Promise<void> {
  const data = new FormData(form)
  const username = String(data.get('username'))
  const passwordHash = await sha256Hex(String(data.get('password')))
  const response = await call(apiUrl('v1/auth/token'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, passwordHash })
  })
  token.set((await readJson<{ access_token: string }>(response)).access_token)
  sessionStorage.setItem('image-dump-user', username)
  form.reset()
  say('')
  await start()
}

async function start (): Promise<void> {
  $('who-name').textContent = sessionStorage.getItem('image-dump-user') ?? ''
  showSignedIn(true)
  await Promise.all([refreshQuota(), loadDumps()])
}

$<HTMLFormElement>('sign-in').addEventListener('submit', (event) => {
  event.preventDefault()
  run(() => signIn(event.target as HTMLFormElement))
})
$<HTMLFormElement>('new-dump').addEventListener('submit', (event) => {
  event.preventDefault()
  run(() => submitDump(event.target as HTMLFormElement))
})
$<HTMLFormElement>('new-dump').querySelector<HTMLInputElement>('input[type=file]')!.addEventListener('change', (event) => {
  const file = (event.target as HTMLInputElement).files?.[0]
  if (file === undefined) return
  run(async () => { ($<HTMLFormElement>('new-dump').elements.namedItem('batch') as HTMLTextAreaElement).value = await file.text() })
})
$('more-dumps').addEventListener('click', () => run(() => loadDumps(true)))
$('sign-out').addEventListener('click', () => {
  signOut()
  sessionStorage.removeItem('image-dump-user')
  say('')
})

if (token.get() !== null) run(start)
