/**
 * A value an earlier hook of the route sets on the request (the principal from
 * `authenticate`, the admitted request id from the quota). Missing means the route is
 * wired wrong: a 500 that names what is missing, rather than a TypeError further on.
 */
export function setByHook<T> (value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not set: the route lacks the hook that sets it`)
  return value
}
