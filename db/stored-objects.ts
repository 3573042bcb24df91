import { CompiledQuery } from 'kysely'
import type { Executor } from './requests.js'
import type { Engine } from './schema.js'

/** What is known of the bytes an object holds. */
export interface ObjectBytes {
  sha256: string
  /** the key of the object written for them */
  key: string
  contentType: string
  bytes: number
  width?: number
  height?: number
}

/**
 * The `stored_objects` table's owner: one object per user and SHA-256, so identical bytes
 * are stored once per user. Its rows are written and removed only inside the transactions
 * of db/dump-images.ts (recording) and of a dump's removal, which lock them in the order
 * of their SHA-256: a removal and a recording of the same bytes are ordered by those row
 * locks on MySQL (by the single writer on SQLite), so a dump never points at an object
 * removed under it.
 */
export function createStoredObjects (engine: Engine) {
  const mysql = engine === 'mysql'
  const placeholders = (n: number): string => `${'?, '.repeat(n - 1)}?`

  /** `keys` by their SHA-256, locked on MySQL until the transaction ends. */
  async function keysOf (trx: Executor, userid: number, sha256s: readonly string[]): Promise<Map<string, string>> {
    if (sha256s.length === 0) return new Map()
    const sorted = [...new Set(sha256s)].sort()
    const { rows } = await trx.executeQuery(CompiledQuery.raw(
      `SELECT sha256, object_key FROM stored_objects WHERE userid = ? AND sha256 IN (${placeholders(sorted.length)}) ORDER BY sha256${mysql ? ' FOR UPDATE' : ''}`,
      [userid, ...sorted]))
    return new Map((rows as Array<{ sha256: string, object_key: string }>).map((row) => [row.sha256, row.object_key]))
  }

  return {
    /**
     * Makes each of `objects` the user's object for its bytes unless the user has one
     * already; returns, for every SHA-256 given, the key of the object that holds those
     * bytes now (the older one when there was one). Inserted first, in SHA-256 order, then
     * read back under lock: two recordings of the same bytes at once wait for each other
     * instead of both claiming them.
     */
    async claim (trx: Executor, userid: number, objects: readonly ObjectBytes[]): Promise<Map<string, string>> {
      if (objects.length === 0) return new Map()
      const first = new Map<string, ObjectBytes>()
      for (const object of objects) if (!first.has(object.sha256)) first.set(object.sha256, object)
      const sorted = [...first.values()].sort((a, b) => (a.sha256 < b.sha256 ? -1 : 1))
      const params: unknown[] = []
      for (const o of sorted) params.push(userid, o.sha256, o.key, o.contentType, o.bytes, o.width ?? null, o.height ?? null)
      await trx.executeQuery(CompiledQuery.raw(
        `INSERT INTO stored_objects (userid, sha256, object_key, content_type, bytes, width, height) VALUES ${'(?, ?, ?, ?, ?, ?, ?), '.repeat(sorted.length - 1)}(?, ?, ?, ?, ?, ?, ?) ` +
        (mysql ? 'ON DUPLICATE KEY UPDATE userid = userid' : 'ON CONFLICT (userid, sha256) DO NOTHING'),
        params))
      return await keysOf(trx, userid, sorted.map((o) => o.sha256))
    },

    /** The user's objects for these SHA-256s (sha256 → key), locked until the transaction ends. */
    lock: keysOf,

    /** Forgets the user's objects for these SHA-256s (the caller removes the objects themselves). */
    async forget (trx: Executor, userid: number, sha256s: readonly string[]): Promise<void> {
      if (sha256s.length === 0) return
      await trx.deleteFrom('stored_objects').where('userid', '=', userid).where('sha256', 'in', [...sha256s]).execute()
    },

    /** The keys of the user's objects that start with `prefix` (one dump's folder). */
    async keysUnder (trx: Executor, userid: number, prefix: string): Promise<Set<string>> {
      const rows = await trx.selectFrom('stored_objects').select('object_key')
        .where('userid', '=', userid)
        // the keys from `prefix` up to the prefix with its last character one higher: a
        // range of the (userid, object_key) index, with no LIKE escaping to get right
        .where('object_key', '>=', prefix)
        .where('object_key', '<', prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1))
        .execute()
      return new Set(rows.map((row) => row.object_key))
    }
  }
}

export type StoredObjects = ReturnType<typeof createStoredObjects>
