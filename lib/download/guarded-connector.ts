/**
 * The SSRF guard at the socket level. Unless private networks are allowed, a download
 * checks IP literals before connecting (image-url.ts, on every redirect hop), every address
 * a name resolves to (in the socket's `lookup` below, so the check and the connection use
 * the same answer — no DNS-rebinding window), and the connected socket's peer address.
 * Error messages never echo what an internal name resolved to.
 */
import dns from 'node:dns'
import type net from 'node:net'
import { buildConnector } from 'undici'

/** The SSRF policy: true for an address that may not be connected to. */
export type AddressPolicy = (ip: string) => boolean

/** What the guarded lookup and connector fail with; classified as BLOCKED_ADDRESS. */
export class BlockedAddressError extends Error {
  readonly code = 'ERR_BLOCKED_ADDRESS'
  constructor (message = 'address is private or reserved') {
    super(message)
  }
}

/**
 * A `net.connect` lookup that resolves every address of a name and fails with
 * BlockedAddressError if any of them is blocked, so the connection can only go to an
 * address that was checked (a name that also resolves to 10.0.0.1 is refused outright
 * rather than hoping the connection picks the public one).
 */
export function createGuardedLookup (blocked: AddressPolicy): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '')
      if (addresses.length === 0 || addresses.some((a) => blocked(a.address))) {
        return callback(new BlockedAddressError('host resolves to a private or reserved address'), '')
      }
      if (options.all === true) return callback(null, addresses)
      const first = addresses[0]!
      callback(null, first.address, first.family)
    })
  }
}

/**
 * An undici connector that, on top of `buildConnector`, refuses a connected socket whose
 * peer address is blocked. This is the last line: it also covers IP literals, which never
 * go through `lookup`, should the pre-connect check ever be bypassed. With `blocked` null
 * (private networks allowed) it is plain `buildConnector`.
 */
export function createGuardedConnector (
  blocked: AddressPolicy | null,
  connectOptions: buildConnector.BuildOptions
): buildConnector.connector {
  const connect = buildConnector({
    ...connectOptions,
    ...(blocked === null ? {} : { lookup: createGuardedLookup(blocked) })
  })
  if (blocked === null) return connect
  return (options, callback) => {
    connect(options, (err, socket) => {
      if (err !== null) return callback(err, null)
      const remote = socket.remoteAddress
      if (remote === undefined || blocked(remote)) {
        socket.destroy()
        return callback(new BlockedAddressError(), null)
      }
      callback(null, socket)
    })
  }
}
