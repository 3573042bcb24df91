export interface UserEntry {
  username: string
  password: string
  plan: string
  line: number
}

export class UsersFileError extends Error {
  override name = 'UsersFileError'
}

const USERNAME = /^[A-Za-z0-9._@-]{1,50}$/

/**
 * Parses users.txt: CSV with the header `username,password,plan`; blank lines and
 * lines starting with `#` are skipped. Fields cannot contain commas: a line must have
 * exactly three, so a typo cannot silently shift a plan into a password. Any bad line
 * throws naming its line number.
 */
export function parseUsersFile (text: string, plans: readonly string[], source = 'users file'): UserEntry[] {
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/)
  const entries: UserEntry[] = []
  // lower-cased name → line: names are compared exactly, but two that differ only in case
  // would be two accounts a person cannot tell apart
  const seen = new Map<string, number>()
  let header = false
  lines.forEach((raw, index) => {
    const line = index + 1
    const text = raw.trim()
    if (text === '' || text.startsWith('#')) return
    const fields = text.split(',').map((f) => f.trim())
    const fail = (why: string): never => { throw new UsersFileError(`${source} line ${line}: ${why}`) }
    if (!header) {
      if (fields.join(',') !== 'username,password,plan') fail('expected the header "username,password,plan"')
      header = true
      return
    }
    if (fields.length !== 3) fail(`expected 3 fields (username,password,plan), found ${fields.length}`)
    const [username, password, plan] = fields as [string, string, string]
    if (!USERNAME.test(username)) fail(`username ${JSON.stringify(username)} must be 1-50 characters of letters, digits, . _ @ -`)
    if (password === '') fail('password is empty')
    if (!plans.includes(plan)) fail(`unknown plan ${JSON.stringify(plan)} (known plans: ${plans.join(', ')})`)
    const earlier = seen.get(username.toLowerCase())
    if (earlier !== undefined) {
      fail(`username ${JSON.stringify(username)} appears twice (line ${earlier}; names differing only in case count as the same)`)
    }
    seen.set(username.toLowerCase(), line)
    entries.push({ username, password, plan, line })
  })
  if (!header) throw new UsersFileError(`${source}: missing the header "username,password,plan"`)
  return entries
}
