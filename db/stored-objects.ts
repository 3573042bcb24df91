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

// The key of the row a reuse inserts in place of an object that is gone; no object has it (contract.ts: keys are never empty).
const GONE = ''

/**
 * The `stored_objects` table's owner: one object per user and SHA-256, so identical bytes
 * are stored once per user. Its rows are written and removed only inside the transactions
 * of db/dump-images.ts (recording) and of a dump's removal, which lock them in the order
 * of their SHA-256: a removal and a recording of the same bytes are ordered by those row
 * locks on MySQL (by the single writer on SQLite), so a dump never points at an object
 * removed under it. A reuse (an image pointing at bytes recorded before, after a 304) is
 * checked under the same locks, in the same pass (claim).
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
     *
     * `reusing` are SHA-256s of bytes a recording points at without having written them (a
     * reuse after a 304): they are locked in the same pass and order, and come back only
     * while the user still has their object. Their rows are inserted too, under a key no
     * object has (GONE), so that every lock is taken by the one insert in SHA-256 order (a
     * second, separate locking read could meet a removal that locks the other way round);
     * a row read back with that key did not exist, and is deleted again before anyone can
     * see it.
     */
    async claim (trx: Executor, userid: number, objects: readonly ObjectBytes[], reusing: readonly string[] = []): Promise<Map<string, string>> {
      if (objects.length === 0 && reusing.length === 0) return new Map()
      const first = new Map<string, ObjectBytes | undefined>()
      for (const object of objects) if (!first.has(object.sha256)) first.set(object.sha256, object)
      // bytes this recording also wrote an object for are claimed with it
      for (const sha256 of reusing) if (!first.has(sha256)) first.set(sha256, undefined)
      const sorted = [...first.keys()].sort()
      const params: unknown[] = []
      for (const sha256 of sorted) {
        const o = first.get(sha256)
        if (o === undefined) params.push(userid, sha256, GONE, '', 0, null, null)
        else params.push(userid, sha256, o.key, o.contentType, o.bytes, o.width ?? null, o.height ?? null)
      }
      await trx.executeQuery(CompiledQuery.raw(
        `INSERT INTO stored_objects (userid, sha256, object_key, content_type, bytes, width, height) VALUES ${'(?, ?, ?, ?, ?, ?, ?), '.repeat(sorted.length - 1)}(?, ?, ?, ?, ?, ?, ?) ` +
        (mysql ? 'ON DUPLICATE KEY UPDATE userid = userid' : 'ON CONFLICT (userid, sha256) DO NOTHING'),
        params))
      const keys = await keysOf(trx, userid, sorted)
      const gone = [...keys].filter(([, key]) => key === GONE).map(([sha256]) => sha256)
      if (gone.length > 0) {
        await trx.deleteFrom('stored_objects').where('userid', '=', userid).where('sha256', 'in', gone).execute()
        for (const sha256 of gone) keys.delete(sha256)
      }
      return keys
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
