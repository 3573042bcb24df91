import { Migrator, type Kysely, type Migration, type MigrationProvider } from 'kysely'
import * as initial from './migrations/001_initial.js'
import * as exactUsernames from './migrations/002_exact_usernames_and_login_attempts.js'
import * as idempotencyKeys from './migrations/003_idempotency_keys.js'
import * as imageOutcomes from './migrations/004_image_outcomes.js'
import * as dumpEvents from './migrations/005_dump_events_and_summaries.js'
import * as sharedDownloads from './migrations/006_shared_downloads.js'
import * as admissionNumbers from './migrations/007_admission_numbers.js'
import * as storedObjects from './migrations/008_stored_objects.js'
import * as urlValidators from './migrations/009_url_validators.js'
import * as runBy from './migrations/010_run_by.js'

// Migrations are imported, not read from a folder, so the same list runs from the
// TypeScript sources (tests, dev) and from the compiled build.
const migrations: Record<string, Migration> = {
  '001_initial': initial,
  '002_exact_usernames_and_login_attempts': exactUsernames,
  '003_idempotency_keys': idempotencyKeys,
  '004_image_outcomes': imageOutcomes,
  '005_dump_events_and_summaries': dumpEvents,
  '006_shared_downloads': sharedDownloads,
  '007_admission_numbers': admissionNumbers,
  '008_stored_objects': storedObjects,
  '009_url_validators': urlValidators,
  '010_run_by': runBy
}

const provider: MigrationProvider = { getMigrations: async () => migrations }

/** Brings the schema to the latest version. Kysely's migration lock makes concurrent starts safe. */
export async function migrateToLatest (db: Kysely<any>): Promise<string[]> { // eslint-disable-line @typescript-eslint/no-explicit-any -- any schema
  const { error, results } = await new Migrator({ db, provider }).migrateToLatest()
  if (error !== undefined) {
    const failed = results?.find((r) => r.status === 'Error')
    throw new Error(`database migration ${failed?.migrationName ?? ''} failed: ${error instanceof Error ? error.message : String(error)}`, { cause: error })
  }
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName)
}

/** Brings the schema to the named version and no further (tests of a migration over existing data). */
export async function migrateUpTo (db: Kysely<any>, name: string): Promise<void> { // eslint-disable-line @typescript-eslint/no-explicit-any -- any schema
  const { error } = await new Migrator({ db, provider }).migrateTo(name)
  if (error !== undefined) throw new Error(`database migration to ${name} failed`, { cause: error })
}
