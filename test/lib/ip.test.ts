import t from 'tap'
import { isBlockedAddress } from '../../lib/ip.js'

// Only global unicast may be reached by downloads; everything else is refused.

t.test('global unicast addresses are allowed', async (t) => {
  for (const address of [
    '8.8.8.8',
    '1.1.1.1',
    '93.184.215.14',
    '172.15.255.255', // just below 172.16/12
    '172.32.0.1', // just above it
    '100.63.255.255', // just below 100.64/10
    '2606:4700::1111',
    '2001:4860:4860::8888',
    '::ffff:8.8.8.8' // IPv4-mapped public address: judged as 8.8.8.8
  ]) {
    t.equal(isBlockedAddress(address), false, `${address} is allowed`)
  }
})

t.test('non-public addresses are blocked', async (t) => {
  const table: Array<[string, string]> = [
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback, anywhere in 127/8'],
    ['10.0.0.1', 'private 10/8'],
    ['10.255.255.255', 'private 10/8'],
    ['172.16.0.1', 'private 172.16/12'],
    ['172.31.255.255', 'private 172.16/12'],
    ['192.168.1.1', 'private 192.168/16'],
    ['100.64.0.1', 'carrier-grade NAT 100.64/10'],
    ['100.127.255.255', 'carrier-grade NAT 100.64/10'],
    ['169.254.169.254', 'link-local (cloud metadata)'],
    ['224.0.0.1', 'multicast 224/4'],
    ['239.255.255.250', 'multicast 224/4'],
    ['255.255.255.255', 'broadcast'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'this network 0/8'],
    ['192.0.2.1', 'documentation (TEST-NET-1)'],
    ['198.18.0.1', 'benchmarking'],
    ['240.0.0.1', 'reserved 240/4'],
    ['::1', 'IPv6 loopback'],
    ['::', 'IPv6 unspecified'],
    ['fe80::1', 'IPv6 link-local'],
    ['fe80::1%eth0', 'IPv6 link-local with a zone'],
    ['fc00::1', 'unique-local'],
    ['fd12:3456:789a::1', 'unique-local'],
    ['ff02::1', 'IPv6 multicast'],
    ['::ffff:10.0.0.1', 'IPv4-mapped private'],
    ['::ffff:127.0.0.1', 'IPv4-mapped loopback'],
    ['::ffff:7f00:1', 'IPv4-mapped loopback, hex form'],
    ['2002:7f00:1::1', '6to4 (can tunnel to any IPv4)'],
    ['2001::1', 'Teredo'],
    ['64:ff9b::a00:1', 'NAT64'],
    ['2001:db8::1', 'IPv6 documentation'],
    ['100::1', 'IPv6 discard'],
    ['::7f00:1', 'IPv4-compatible IPv6 (::/96, deprecated), as URLs normalise [::127.0.0.1]'],
    ['::127.0.0.1', 'IPv4-compatible IPv6 in the dotted form inet_ntop prints'],
    ['::8.8.8.8', 'IPv4-compatible IPv6 is not the IPv4 address it embeds'],
    ['::2', 'IETF-reserved ::/8'],
    ['4000::1', 'IETF-reserved, outside global unicast 2000::/3'],
    ['e000::1', 'IETF-reserved, outside global unicast 2000::/3']
  ]
  for (const [address, why] of table) {
    t.equal(isBlockedAddress(address), true, `${address} is blocked: ${why}`)
  }
})

t.test('input that is not an address is blocked (the guard fails closed)', async (t) => {
  for (const input of ['', 'localhost', 'example.com', '1.2.3.4.5', '::g', '256.0.0.1', ' 8.8.8.8x']) {
    t.equal(isBlockedAddress(input), true, JSON.stringify(input))
  }
})
