import { createHmac } from 'node:crypto'

const b64url = (value: Buffer | string): string => Buffer.from(value).toString('base64url')

/**
 * Builds a JWT by hand, so tests can present tokens the service must refuse: other
 * algorithms, foreign keys, tampered payloads, `alg: none`.
 */
export function forgeToken (header: Record<string, unknown>, payload: Record<string, unknown>, key?: Buffer | string): string {
  const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`
  const alg = String(header.alg)
  if (alg === 'none' || key === undefined) return `${signingInput}.`
  const hash = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' }[alg]
  if (hash === undefined) throw new Error(`cannot forge ${alg}`)
  return `${signingInput}.${createHmac(hash, key).update(signingInput).digest('base64url')}`
}

export function decodeToken (token: string): { header: Record<string, unknown>, payload: Record<string, unknown> } {
  const [header, payload] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(header!, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8'))
  }
}
