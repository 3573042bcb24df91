import type { TokenResponse } from '../../schemas/auth.js'

/** The sample users of users.txt, as the tests log in with them. */
export const sampleUsers = {
  gold: { username: 'alice', password: 'gold-password' },
  silver: { username: 'bob', password: 'silver-password' },
  bronze: { username: 'carol', password: 'bronze-password' }
} as const

/** A login through the auth plugin's service: the token answer, or undefined when refused or throttled. */
export async function issueToken (
  app: { imageDumpAuth: { login: (u: string, h: string, ip: string) => Promise<{ outcome: string, token?: TokenResponse }> } },
  username: string, passwordHash: string, ip = '127.0.0.1'
): Promise<TokenResponse | undefined> {
  const result = await app.imageDumpAuth.login(username, passwordHash, ip)
  return result.outcome === 'token' ? result.token : undefined
}
