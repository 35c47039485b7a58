import { nestedRoot } from '../files/safe-paths.ts'
import { field, isObject, isSize, isString, malformed } from './manifest-fields.ts'
import type { ManifestFile } from './manifest.ts'

/**
 * The application's files in an artifact: one pax tar archive (zstd,
 * optionally age) and an index of every entry with the SHA-256 of each
 * regular file's content, hashed from the bytes that went into the archive.
 */
export interface FilesystemSection {
  status: 'archived'
  /** Entries in files[]: the archive and its index. */
  archive: string
  index: string
  format: 'pax'
  compression: 'zstd'
  /** Absolute paths as given to --path / BACKUP_PATHS, in archive order; members are these without the leading '/'. */
  roots: string[]
  /** Totals over the index: entries of every type, regular files, and their content bytes. */
  entries: number
  regularFiles: number
  bytes: number
  /** Not in the archive: sockets, FIFOs and devices, which a restore cannot meaningfully recreate. */
  skipped: FileNote[]
  /** Changed while being read (archived as read; may be inconsistent) or gone before it could be read (not archived). */
  changed: FileNote[]
  vanished: FileNote[]
  /** How many notes were left out of the three lists above to keep the manifest small. */
  notesOmitted: number
}

export interface FileNote {
  /** As tar or the scan named it (tar escapes control characters). */
  path: string
  reason: string
}

export interface EncryptionSection {
  scheme: 'age'
  /** How many recipients each encrypted file was written to; the keys themselves are not recorded. */
  recipients: number
}

function parseNotes(value: unknown, key: string): FileNote[] {
  if (!Array.isArray(value)) throw malformed(`filesystem.${key} must be a list`)
  return value.map((n, i) => {
    if (!isObject(n)) throw malformed(`filesystem.${key}[${i}] must be an object`)
    const where = `filesystem.${key}[${i}].`
    return { path: field(n, 'path', isString, 'a path', where), reason: field(n, 'reason', isString, 'a reason', where) }
  })
}

export function parseFilesystem(value: unknown, files: ManifestFile[]): FilesystemSection {
  if (!isObject(value)) throw malformed('filesystem must be an object')
  const where = 'filesystem.'
  if (value.status !== 'archived') throw malformed(`filesystem.status must be 'archived'`)
  const listed = (key: string) => {
    const name = field(value, key, isString, 'a file name', where)
    if (!files.some((f) => f.path === name)) throw malformed(`filesystem.${key} '${name}' is not listed in files`)
    return name
  }
  if (value.format !== 'pax') throw malformed(`filesystem.format must be 'pax'`)
  if (value.compression !== 'zstd') throw malformed(`filesystem.compression must be 'zstd'`)
  if (!Array.isArray(value.roots) || value.roots.length === 0) throw malformed('filesystem.roots must be a non-empty list')
  const roots = value.roots.map((r, i) => {
    if (typeof r !== 'string' || !r.startsWith('/') || r === '/' || r.includes('\0') || r.split('/').slice(1).some((p) => p === '' || p === '.' || p === '..')) {
      throw malformed(`filesystem.roots[${i}] must be an absolute, normalised path`)
    }
    return r
  })
  // The backup refuses nested paths; a manifest that lists them could only fail at the swap, half-way.
  const nested = nestedRoot(roots)
  if (nested) throw malformed(`filesystem.roots lists ${JSON.stringify(nested.inner)} inside (or beside a copy of) another root`)
  return {
    status: 'archived',
    archive: listed('archive'),
    index: listed('index'),
    format: 'pax',
    compression: 'zstd',
    roots,
    entries: field(value, 'entries', isSize, 'a count', where),
    regularFiles: field(value, 'regularFiles', isSize, 'a count', where),
    bytes: field(value, 'bytes', isSize, 'a byte count', where),
    skipped: parseNotes(value.skipped, 'skipped'),
    changed: parseNotes(value.changed, 'changed'),
    vanished: parseNotes(value.vanished, 'vanished'),
    notesOmitted: field(value, 'notesOmitted', isSize, 'a count', where),
  }
}

export function parseEncryption(value: unknown): EncryptionSection {
  if (!isObject(value)) throw malformed('encryption must be an object')
  if (value.scheme !== 'age') throw malformed(`encryption.scheme must be 'age'`)
  const recipients = field(value, 'recipients', isSize, 'a count', 'encryption.')
  if (recipients < 1) throw malformed('encryption.recipients must be at least 1')
  return { scheme: 'age', recipients }
}
