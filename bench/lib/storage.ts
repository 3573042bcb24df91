/**
 * Where the service's STORAGE_DIR and curl's output folder live. File creation on a real
 * disk can cost far more than the rest of a small download (on the machine these
 * figures were first taken on, an ext4 create took 0.05–0.8 ms depending on the disk's
 * mood), so P1 is measured twice: on the temporary folder's disk, and on a tmpfs
 * (/dev/shm) where only the CPU work of each side is left.
 */
import { accessSync, constants, mkdtempSync, statfsSync } from 'node:fs'
import path from 'node:path'

export interface StorageRoot {
  /** short name for tables: "disk" or "tmpfs" */
  label: string
  dir: string
  /** e.g. "/tmp (ext4)" */
  description: string
}

const FS_TYPES: Record<number, string> = {
  0xef53: 'ext4',
  0x01021994: 'tmpfs',
  0x58465342: 'xfs',
  0x9123683e: 'btrfs',
  0x794c7630: 'overlayfs',
  0x6969: 'nfs',
  0x65735546: 'fuse'
}

export function fileSystemOf (dir: string): string {
  try {
    const type = statfsSync(dir).type
    return FS_TYPES[type] ?? `fs type 0x${type.toString(16)}`
  } catch {
    return 'unknown fs'
  }
}

/** The temporary folder's own root ("disk"), plus a tmpfs root when /dev/shm is one and writable. */
export function storageRoots (tmp: string, withTmpfs: boolean): StorageRoot[] {
  const roots: StorageRoot[] = [{ label: fileSystemOf(tmp) === 'tmpfs' ? 'tmpfs' : 'disk', dir: tmp, description: `${path.dirname(tmp)} (${fileSystemOf(tmp)})` }]
  if (!withTmpfs || roots[0]!.label === 'tmpfs') return roots
  try {
    accessSync('/dev/shm', constants.W_OK)
    if (fileSystemOf('/dev/shm') !== 'tmpfs') return roots
    roots.push({ label: 'tmpfs', dir: mkdtempSync('/dev/shm/image-dump-bench-'), description: '/dev/shm (tmpfs)' })
  } catch {}
  return roots
}
