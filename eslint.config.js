import neostandard, { resolveIgnoresFromGitignore } from 'neostandard'
import tseslint from 'typescript-eslint'

// The Fastify organisation's style (neostandard) with TypeScript, plus the type-aware
// rules that catch what strict types alone do not: promises left floating or misused.
export default [
  ...neostandard({ ts: true, ignores: [...resolveIgnoresFromGitignore(), 'test/hostile/cases/**'] }),
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname }
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-explicit-any': 'error',
      // `void promise` is how a deliberately unawaited promise is marked
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    // tap queues subtests itself: `t.test(…)` is not awaited by design
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-floating-promises': 'off' }
  },
  { linterOptions: { reportUnusedDisableDirectives: 'error' } }
]
