import ipaddr from 'ipaddr.js'

// Only 2000::/3 is allocated as IPv6 global unicast (RFC 4291, IANA); ipaddr.js calls every
// IPv6 address outside its named ranges 'unicast', the IETF-reserved space (::/8, 4000::/2, …) too.
const GLOBAL_UNICAST_V6 = ipaddr.IPv6.parseCIDR('2000::/3')
// "::a.b.c.d" is IPv4-compatible IPv6 (::/96, deprecated and reserved), the form inet_ntop
// prints for it; ipaddr.js reads it as IPv4-mapped and would judge the IPv4 address instead.
const IPV4_COMPATIBLE = /^::(?:\d{1,3}\.){3}\d{1,3}(?:%.*)?$/

/**
 * Whether an IP address must not be reached by server-side downloads (the SSRF guard).
 *
 * The policy is an allow-list of one: only what ipaddr.js classifies as plain global
 * `unicast` (and, for IPv6, lies in the global unicast block 2000::/3) is reachable. Everything else — loopback, private (RFC 1918), link-local
 * (including 169.254.169.254 cloud metadata), multicast, unspecified (0.0.0.0/8, ::),
 * broadcast, carrier-grade NAT, unique-local (fc00::/7), reserved and documentation
 * ranges, and the IPv6 transition ranges (6to4, Teredo, NAT64, …) that can tunnel to
 * an IPv4 address we would otherwise refuse — is blocked. IPv4-mapped IPv6
 * (`::ffff:127.0.0.1`) is unwrapped first, so it is judged as the IPv4 address it is.
 *
 * Anything ipaddr.js cannot parse is blocked: a guard that fails open is no guard.
 */
export function isBlockedAddress (address: string): boolean {
  if (typeof address !== 'string' || address.length === 0) return true
  if (IPV4_COMPATIBLE.test(address)) return true
  let parsed: ipaddr.IPv4 | ipaddr.IPv6
  try {
    // process() unwraps IPv4-mapped IPv6; parse() alone would report range 'ipv4Mapped'
    parsed = ipaddr.process(address)
  } catch {
    return true
  }
  if (parsed.kind() === 'ipv6' && !parsed.match(GLOBAL_UNICAST_V6)) return true
  return parsed.range() !== 'unicast'
}

/**
 * The network a client address stands for when counting what it does: an IPv4 address
 * itself, an IPv6 address's /64 (one subscriber usually holds a whole /64 and can rotate
 * through it at will). IPv4-mapped IPv6 counts as its IPv4 address; an unparseable value
 * (a Unix socket, a test) counts as itself.
 */
export function clientNetwork (address: string): string {
  let parsed: ipaddr.IPv4 | ipaddr.IPv6
  try {
    parsed = ipaddr.process(address.replace(/%.*$/, ''))
  } catch {
    return address
  }
  if (parsed.kind() === 'ipv4') return parsed.toString()
  const parts = (parsed as ipaddr.IPv6).parts.slice(0, 4)
  return `${parts.map((p) => p.toString(16)).join(':')}::/64`
}
