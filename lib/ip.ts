import ipaddr from 'ipaddr.js'

/**
 * Whether an IP address must not be reached by server-side downloads (the SSRF guard).
 *
 * The policy is an allow-list of one: only what ipaddr.js classifies as plain global
 * `unicast` is reachable. Everything else — loopback, private (RFC 1918), link-local
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
  let parsed: ipaddr.IPv4 | ipaddr.IPv6
  try {
    // process() unwraps IPv4-mapped IPv6; parse() alone would report range 'ipv4Mapped'
    parsed = ipaddr.process(address)
  } catch {
    return true
  }
  return parsed.range() !== 'unicast'
}
