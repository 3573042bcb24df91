/**
 * Hostile image URLs. A URL never refuses the batch: each is a per-image FAILURE with the
 * code that says why (BLOCKED_ADDRESS, INVALID_URL, DNS), in a 200 that is logged.
 *
 * The service runs with ALLOW_PRIVATE_NETWORKS=false, so the test origins (on loopback)
 * are themselves forbidden: every SSRF spelling below aims at a real listening origin, and
 * the proof that the guard held is that the origins never saw a connection. Redirects to a
 * private address cannot start from a loopback origin through the whole service (the first
 * hop is already refused, which one case asserts); they are driven through the fetcher with
 * a `blockedAddress` policy that allows 127.0.0.1 and nothing else private.
 */
import t from 'tap'
import { createImageFetcher } from '../../plugins/image-fetcher.js'
import { filesUnder } from '../helpers/dumps.js'
import { startOrigin, type Origin } from '../helpers/origin.js'
import { Sandbox, assertStillStanding, hostileTarget, runCases, type HostileCase } from './harness.js'

const sandbox = await Sandbox.open(t)
const origin = await startOrigin()
t.teardown(() => origin.close())
// an origin on ::1 when the host has IPv6 loopback, so IPv6 spellings aim at a listener too
let origin6: Origin | undefined
try {
  origin6 = await startOrigin({ host: '::1' })
  t.teardown(() => origin6!.close())
} catch {
  t.comment('no IPv6 loopback here: IPv6 spellings aim at closed ports')
}

const P = origin.port
const P6 = origin6?.port ?? P

interface UrlCase {
  name: string
  url: string
  /** the image's error code; '|' separates codes that depend on the host's resolver */
  code: string
}

const ssrf: UrlCase[] = [
  // 127.0.0.1 in every spelling the WHATWG parser accepts
  { name: 'decimal 2130706433', url: `http://2130706433:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'octal 0177.0.0.1', url: `http://0177.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'hex 0x7f.1', url: `http://0x7f.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'hex 0x7f000001', url: `http://0x7f000001:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'octal 017700000001', url: `http://017700000001:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'short 127.1', url: `http://127.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'short 127.0.1', url: `http://127.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'trailing dot 127.0.0.1.', url: `http://127.0.0.1.:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'percent-encoded %31%32%37.0.0.1', url: `http://%31%32%37.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'fullwidth digits １２７.０.０.１', url: `http://１２７.０.０.１:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'ideographic full stops 127。0。0。1', url: `http://127。0。0。1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'upper-case scheme', url: `HTTP://127.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'no slashes: http:127.0.0.1', url: `http:127.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'backslashes: http:\\\\127.0.0.1', url: `http:\\\\127.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'localhost (resolves to loopback)', url: `http://localhost:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'LOCALHOST', url: `http://LOCALHOST:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '0 (0.0.0.0 reaches local listeners)', url: `http://0:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '0.0.0.0', url: `http://0.0.0.0:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  // IPv6 and IPv4 inside IPv6
  { name: '[::1]', url: `http://[::1]:${P6}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '[::]', url: `http://[::]:${P6}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '[::ffff:7f00:1]', url: `http://[::ffff:7f00:1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '[::ffff:127.0.0.1]', url: `http://[::ffff:127.0.0.1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '[0:0:0:0:0:ffff:127.0.0.1]', url: `http://[0:0:0:0:0:ffff:127.0.0.1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'IPv4-compatible [::127.0.0.1]', url: `http://[::127.0.0.1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'SIIT [::ffff:0:127.0.0.1]', url: `http://[::ffff:0:127.0.0.1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'NAT64 [64:ff9b::127.0.0.1]', url: `http://[64:ff9b::127.0.0.1]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: '6to4 [2002:7f00:1::]', url: `http://[2002:7f00:1::]:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'IETF-reserved IPv6 [4000::1]', url: 'http://[4000::1]/a.png', code: 'BLOCKED_ADDRESS' },
  { name: 'IPv6 link-local [fe80::1]', url: 'https://[fe80::1]/a.png', code: 'BLOCKED_ADDRESS' },
  // cloud metadata and private ranges
  { name: 'metadata 169.254.169.254', url: 'http://169.254.169.254/latest/meta-data/iam/security-credentials/', code: 'BLOCKED_ADDRESS' },
  { name: 'metadata [fd00:ec2::254]', url: 'http://[fd00:ec2::254]/latest/meta-data/', code: 'BLOCKED_ADDRESS' },
  { name: 'metadata 100.100.100.200', url: 'http://100.100.100.200/latest/meta-data/', code: 'BLOCKED_ADDRESS' },
  { name: 'metadata as [::ffff:169.254.169.254]', url: 'http://[::ffff:169.254.169.254]/latest/meta-data/', code: 'BLOCKED_ADDRESS' },
  { name: 'metadata.google.internal', url: 'http://metadata.google.internal/computeMetadata/v1/', code: 'BLOCKED_ADDRESS|DNS' },
  { name: 'private 10.0.0.1', url: 'http://10.0.0.1/a.png', code: 'BLOCKED_ADDRESS' },
  { name: 'private 172.16.0.1', url: 'http://172.16.0.1/a.png', code: 'BLOCKED_ADDRESS' },
  { name: 'private 192.168.1.1', url: 'http://192.168.1.1/a.png', code: 'BLOCKED_ADDRESS' },
  { name: 'multicast 224.0.0.1', url: 'http://224.0.0.1/a.png', code: 'BLOCKED_ADDRESS' },
  { name: 'broadcast 255.255.255.255', url: 'http://255.255.255.255/a.png', code: 'BLOCKED_ADDRESS' },
  // user@host and fragment tricks
  { name: 'http://example.com@127.0.0.1/ (credentials are refused)', url: `http://example.com@127.0.0.1:${P}/png/1`, code: 'INVALID_URL' },
  { name: 'http://example.com:80@127.0.0.1/', url: `http://example.com:80@127.0.0.1:${P}/png/1`, code: 'INVALID_URL' },
  { name: 'http://127.0.0.1#@example.com/', url: `http://127.0.0.1:${P}#@example.com/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'http://127.0.0.1?@example.com/', url: `http://127.0.0.1:${P}?@example.com/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'http://127.0.0.1\\@example.com/', url: `http://127.0.0.1:${P}\\@example.com/png/1`, code: 'BLOCKED_ADDRESS' },
  // a redirect to a private address, through the whole service: the first hop is refused
  { name: 'an origin redirecting to 169.254.169.254', url: `http://127.0.0.1:${P}/redirect-to?url=${encodeURIComponent('http://169.254.169.254/latest/meta-data/')}`, code: 'BLOCKED_ADDRESS' }
]

const longPath = (url: string, length: number): string => url + 'a'.repeat(length - url.length)

const others: UrlCase[] = [
  // schemes
  { name: 'file:///etc/passwd', url: 'file:///etc/passwd', code: 'INVALID_URL' },
  { name: 'file://localhost/etc/passwd', url: 'file://localhost/etc/passwd', code: 'INVALID_URL' },
  { name: 'ftp:', url: 'ftp://example.com/a.png', code: 'INVALID_URL' },
  { name: 'gopher: (Redis smuggling)', url: 'gopher://127.0.0.1:6379/_FLUSHALL%0D%0A', code: 'INVALID_URL' },
  { name: 'dict:', url: 'dict://127.0.0.1:11211/stat', code: 'INVALID_URL' },
  { name: 'ldap:', url: 'ldap://127.0.0.1/dc=example', code: 'INVALID_URL' },
  { name: 'data:', url: 'data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==', code: 'INVALID_URL' },
  { name: 'javascript:', url: 'javascript:alert(document.domain)', code: 'INVALID_URL' },
  { name: 'ws:', url: `ws://127.0.0.1:${P}/`, code: 'INVALID_URL' },
  { name: 'blob:', url: 'blob:https://example.com/uuid', code: 'INVALID_URL' },
  { name: 'a Windows path', url: 'C:\\Windows\\win.ini', code: 'INVALID_URL' },
  { name: 'a scheme-relative URL', url: `//127.0.0.1:${P}/png/1`, code: 'INVALID_URL' },
  { name: 'a relative path', url: '../../../../etc/passwd', code: 'INVALID_URL' },
  // length
  { name: 'a URL of 9 000 characters', url: longPath('http://example.com/', 9000), code: 'INVALID_URL' },
  { name: 'a URL of 1 MB', url: longPath('http://example.com/', 1024 * 1024), code: 'INVALID_URL' },
  { name: 'a URL of exactly 8 192 characters is still judged by its host', url: longPath(`http://127.0.0.1:${P}/`, 8192), code: 'BLOCKED_ADDRESS' },
  // internationalised hosts
  { name: 'IDN http://bücher.invalid/', url: 'http://bücher.invalid/a.png', code: 'DNS' },
  { name: 'its punycode http://xn--bcher-kva.invalid/', url: 'http://xn--bcher-kva.invalid/a.png', code: 'DNS' },
  { name: 'a soft hyphen, mapped away', url: 'http://ex\u00adample.invalid/a.png', code: 'DNS' },
  { name: 'a snowman host', url: 'http://☃.invalid/a.png', code: 'DNS' },
  { name: 'an invalid punycode label', url: 'http://xn--a.invalid/a.png', code: 'INVALID_URL' },
  // whitespace and control characters
  { name: 'a space in the host', url: 'http://exa mple.com/a.png', code: 'INVALID_URL' },
  { name: 'a NUL in the host', url: 'http://exa\u0000mple.com/a.png', code: 'INVALID_URL' },
  { name: 'a NUL as the host', url: 'http://\u0000/a.png', code: 'INVALID_URL' },
  { name: 'a tab inside 127.0.\\t0.1 (removed by the parser)', url: `http://127.0.\t0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'a newline after the URL', url: `http://127.0.0.1:${P}/png/1\n`, code: 'BLOCKED_ADDRESS' },
  { name: 'spaces around the URL (trimmed)', url: `   http://127.0.0.1:${P}/png/1   `, code: 'BLOCKED_ADDRESS' },
  { name: 'a leading C0 control', url: `\u0001http://127.0.0.1:${P}/png/1`, code: 'BLOCKED_ADDRESS' },
  { name: 'a space in the path', url: `http://127.0.0.1:${P}/png/a b`, code: 'BLOCKED_ADDRESS' },
  // broken authorities
  { name: 'a port past 65535', url: 'http://127.0.0.1:99999/a.png', code: 'INVALID_URL' },
  { name: 'an unclosed IPv6 bracket', url: 'http://[::1/a.png', code: 'INVALID_URL' },
  { name: 'an IPv6 zone id', url: 'http://[fe80::1%25eth0]/a.png', code: 'INVALID_URL' },
  { name: 'an empty authority: http:///x.invalid/ is host x.invalid', url: 'http:///x.invalid/a.png', code: 'DNS' }
]

const asCase = (c: UrlCase): HostileCase => ({
  name: `${c.name} → ${c.code}`,
  request: { payload: JSON.stringify({ items: [{ name: c.name, images: [c.url] }] }) },
  expected: { status: 200, images: [c.code] }
})

t.test('through the whole service, ALLOW_PRIVATE_NETWORKS=false', async (t) => {
  const target = await hostileTarget(t, sandbox, 'sqlite', { ALLOW_PRIVATE_NETWORKS: 'false', DOWNLOAD_TIMEOUT_MS: '3000' })
  origin.resetCounters()
  origin6?.resetCounters()
  t.test('SSRF spellings', async (t) => runCases(t, target, ssrf.map(asCase)))
  t.test('schemes, lengths, hosts and characters', async (t) => runCases(t, target, others.map(asCase)))
  t.test('afterwards', async (t) => {
    t.equal(origin.connections, 0, 'the loopback origin never saw a connection')
    t.equal(origin6?.connections ?? 0, 0, 'nor the IPv6 one')
    await assertStillStanding(t, target, sandbox)
  })
})

t.test('redirects to private addresses, through the fetcher with a blockedAddress policy', async (t) => {
  // 127.0.0.1 (the origin) is allowed; 127.0.0.2 (inside) stands for the private network
  const inside = await startOrigin({ host: '127.0.0.2' })
  t.teardown(() => inside.close())
  const storageDir = sandbox.storage('fetcher')
  const fetcher = createImageFetcher({
    storageDir,
    timeoutMs: 3000,
    concurrency: 4,
    perHost: 4,
    maxImageBytes: 1_000_000,
    allowPrivateNetworks: false,
    blockedAddress: (ip) => ip !== '127.0.0.1'
  })
  t.teardown(() => fetcher.close())
  const via = (to: string, status = 302): string => origin.url(`/redirect-to?status=${status}&url=${encodeURIComponent(to)}`)
  const I = inside.port
  const cases: Array<{ name: string, url: string, code: string }> = [
    { name: 'a 302 to the private origin', url: via(inside.url('/png/1')), code: 'BLOCKED_ADDRESS' },
    { name: 'a 301 to it', url: via(inside.url('/png/1'), 301), code: 'BLOCKED_ADDRESS' },
    { name: 'a 303 to it', url: via(inside.url('/png/1'), 303), code: 'BLOCKED_ADDRESS' },
    { name: 'a 307 to it', url: via(inside.url('/png/1'), 307), code: 'BLOCKED_ADDRESS' },
    { name: 'a 308 to it', url: via(inside.url('/png/1'), 308), code: 'BLOCKED_ADDRESS' },
    { name: 'to it in decimal (2130706434)', url: via(`http://2130706434:${I}/png/1`), code: 'BLOCKED_ADDRESS' },
    { name: 'to it as IPv4-mapped IPv6', url: via(`http://[::ffff:127.0.0.2]:${I}/png/1`), code: 'BLOCKED_ADDRESS' },
    { name: 'to it scheme-relative (//127.0.0.2)', url: via(`//127.0.0.2:${I}/png/1`), code: 'BLOCKED_ADDRESS' },
    { name: 'to it on the second hop', url: via(via(inside.url('/png/1'))), code: 'BLOCKED_ADDRESS' },
    { name: 'to the metadata address', url: via('http://169.254.169.254/latest/meta-data/'), code: 'BLOCKED_ADDRESS' },
    { name: 'to [::1]', url: via(`http://[::1]:${P6}/png/1`), code: 'BLOCKED_ADDRESS' },
    { name: 'to file:///etc/passwd', url: via('file:///etc/passwd'), code: 'INVALID_URL' },
    { name: 'to gopher:', url: via(`gopher://127.0.0.2:${I}/_x`), code: 'INVALID_URL' },
    { name: 'to a URL with credentials', url: via(`http://user:pw@127.0.0.2:${I}/png/1`), code: 'INVALID_URL' },
    { name: 'to an unparsable URL', url: via('http://[::1'), code: 'INVALID_URL' },
    { name: 'control: a redirect that stays on the allowed origin', url: via(origin.url('/png/3')), code: 'SUCCESS' }
  ]
  let n = 0
  for (const c of cases) {
    t.test(`${c.name} → ${c.code}`, async (t) => {
      const outcome = await fetcher.fetchImage(c.url, { dir: 'redirects', name: String(++n) })
      if (c.code === 'SUCCESS') {
        t.equal(outcome.status, 'SUCCESS')
        return
      }
      t.equal(outcome.status, 'FAILURE')
      t.match(outcome, { error: { type: 'INTERNAL_ERROR', code: c.code, message: /\S/ } })
    })
  }
  t.test('afterwards', async (t) => {
    t.equal(inside.connections, 0, 'the private origin never saw a connection')
    t.ok(origin.requests >= cases.length, 'every first hop was made (the policy allowed 127.0.0.1)')
    t.same(await filesUnder(storageDir), [`redirects/${cases.length}.png`], 'only the control image was stored, nothing partial')
    await sandbox.check(t)
  })
})
