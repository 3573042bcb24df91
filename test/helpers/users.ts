/** The sample users of users.txt, as the tests log in with them. */
export const sampleUsers = {
  gold: { username: 'alice', password: 'gold-password' },
  silver: { username: 'bob', password: 'silver-password' },
  bronze: { username: 'carol', password: 'bronze-password' }
} as const
