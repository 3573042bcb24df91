import t from 'tap'
import { readFileSync } from 'node:fs'
import { parseUsersFile } from '../../db/users-file.js'

const plans = ['gold', 'silver', 'bronze']

t.test('the shipped users.txt holds one sample user per plan', async (t) => {
  const users = parseUsersFile(readFileSync(new URL('../../users.txt', import.meta.url), 'utf8'), plans)
  t.equal(users.length, 3)
  t.same(users.map((u) => u.plan).sort(), ['bronze', 'gold', 'silver'])
})

t.test('blank lines, comments, CRLF and a BOM are accepted', async (t) => {
  const text = '\uFEFF# users\r\n\r\nusername,password,plan\r\n  # another comment\r\nann,pw,gold\r\n\r\n'
  t.same(parseUsersFile(text, plans), [{ username: 'ann', password: 'pw', plan: 'gold', line: 5 }])
})

t.test('a bad line stops the import naming its line number', async (t) => {
  const header = 'username,password,plan\n'
  const cases: Array<[string, RegExp]> = [
    ['ann,pw\n', /line 2: expected 3 fields/],
    ['ann,pw,gold,extra\n', /line 2: expected 3 fields/],
    ['ann,pw,platinum\n', /line 2: unknown plan "platinum"/],
    ['ann,,gold\n', /line 2: password is empty/],
    ['ann pw,x,gold\n', /line 2: username "ann pw" must be/],
    ['ann,pw,gold\n\nann,pw2,silver\n', /line 4: username "ann" appears twice/]
  ]
  for (const [body, message] of cases) {
    t.throws(() => parseUsersFile(header + body, plans, 'users.txt'), { name: 'UsersFileError', message }, body)
  }
  t.throws(() => parseUsersFile('name,pass,plan\nann,pw,gold\n', plans), { message: /line 1: expected the header/ })
  t.throws(() => parseUsersFile('# nothing\n', plans), { message: /missing the header/ })
})
